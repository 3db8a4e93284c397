"""Prometheus series read from the live state at scrape time, and alerts counted as raised."""

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from facilities.alerts import Change, hazards
from facilities.charging.live import PortLive, StationLive, is_free, shown_state
from facilities.charging.payloads import PortState
from facilities.garage.state import GarageLive
from facilities.rules.live_state import AlertChanged, LiveChange, Reading
from facilities.site import Site, Station

# Port states as metric series (one per state, 0/1); `unknown` until the port has reported.
PORT_STATES = (*(s.value for s in PortState), "unknown")


class AlertMetrics:
    """Alerts raised, counted from the live state's change stream."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.raised = Counter(
            "facilities_alerts_raised",
            "Alerts raised, by rule and severity",
            ["rule", "severity"],
            registry=registry,
        )

    def changed(self, change: LiveChange) -> None:
        """Device changes are the live stream's business, not a metric."""
        if (
            isinstance(change, AlertChanged)
            and change.transition.change is Change.RAISED
            and not change.copied  # counted by the instance that raised it
        ):
            alert = change.transition.alert
            self.raised.labels(alert.rule, alert.severity.value).inc()


# -- read at scrape time -----------------------------------------------------------------


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _add(family: GaugeMetricFamily, labels: list[str], value: float | bool | None) -> None:
    if value is not None:
        family.add_metric(labels, float(value))


class _PortFamilies:
    """The series of every port."""

    def __init__(self) -> None:
        sp = ["station", "port"]
        self.power = _gauge("facilities_port_power_watts", "Power drawn by a port", sp)
        self.current = _gauge("facilities_port_current_amperes", "Current drawn by a port", sp)
        self.voltage = _gauge("facilities_port_voltage_volts", "Supply voltage at a port", sp)
        self.temp = _gauge("facilities_port_temperature_celsius", "Socket temperature", sp)
        self.energy = _gauge(
            "facilities_port_session_energy_joules", "Energy of the port's session so far", sp
        )
        self.state = _gauge(
            "facilities_port_state",
            "1 for the port's current state, 0 for the others",
            [*sp, "state"],
        )
        self.free = _gauge("facilities_port_free", "1 when a resident may use the port now", sp)

    def add(
        self, live: StationLive, port: PortLive, labels: list[str], critical: frozenset[str]
    ) -> None:
        _add(self.power, labels, port.power_w)
        _add(self.current, labels, port.current_a)
        _add(self.voltage, labels, port.voltage_v)
        _add(self.temp, labels, port.temp_c)
        _add(self.energy, labels, port.energy_wh * 3600 if port.energy_wh is not None else None)
        _add(self.free, labels, is_free(live, port, hazards=critical))
        current_state = shown_state(port)
        for name in PORT_STATES:
            self.state.add_metric([*labels, name], 1.0 if name == current_state else 0.0)

    def families(self) -> list[Metric]:
        return [
            self.power,
            self.current,
            self.voltage,
            self.temp,
            self.energy,
            self.state,
            self.free,
        ]


class _StationFamilies:
    """The series of every station (not of its ports)."""

    def __init__(self) -> None:
        s = ["station"]
        self.cabinet = _gauge("facilities_station_temperature_celsius", "Cabinet temperature", s)
        self.leakage = _gauge("facilities_station_leakage_amperes", "Residual (leakage) current", s)
        self.smoke = _gauge(
            "facilities_station_smoke", "1 while the cabinet's detector sees smoke", s
        )
        self.online = _gauge("facilities_station_online", "1 when the station is online", s)
        self.rated = _gauge("facilities_station_port_rated_watts", "Rated power of one port", s)
        self.supply = _gauge(
            "facilities_station_rated_watts", "Rated power of the station's supply", s
        )
        self.info = _gauge(
            "facilities_station_info",
            "A station's community, garage and names",
            ["station", "community", "garage", "name", "name_en"],
        )

    def add(self, spec: Station, live: StationLive) -> None:
        sid = spec.id
        self.info.add_metric([sid, spec.community, spec.garage or "", spec.name, spec.name_en], 1)
        _add(self.online, [sid], live.online is True)
        _add(self.rated, [sid], spec.port_max_w)
        _add(self.supply, [sid], spec.station_max_w)
        _add(self.cabinet, [sid], live.temp_c)
        _add(self.leakage, [sid], live.leakage_ma / 1000 if live.leakage_ma is not None else None)
        _add(self.smoke, [sid], live.smoke)

    def families(self) -> list[Metric]:
        return [
            self.cabinet,
            self.leakage,
            self.smoke,
            self.online,
            self.rated,
            self.supply,
            self.info,
        ]


def device_families(site: Site, reading: Reading, now: datetime) -> list[Metric]:
    """Every device series from the live state (a view: `LiveState.read` calls it)."""
    critical = hazards(reading.alerts.values())
    ports, stations = _PortFamilies(), _StationFamilies()
    seen = _gauge(
        "facilities_device_last_seen_age_seconds",
        "Seconds since the device was last heard from (absent: never since the start)",
        ["device", "kind"],
    )
    for spec in site.stations.values():
        live = reading.stations.get(spec.id)
        if live is None:
            continue
        stations.add(spec, live)
        if live.last_seen is not None:
            _add(seen, [spec.id, "station"], max(0.0, (now - live.last_seen).total_seconds()))
        for number in range(1, spec.ports + 1):
            port = live.ports.get(number) or PortLive(number)
            ports.add(live, port, [spec.id, str(number)], critical)
    families = [*ports.families(), *stations.families()]
    families += _garage_families(site, reading.garages, now, seen)
    return [*families, seen, _community_info(site)]


def _garage_families(
    site: Site, garages: Mapping[str, GarageLive], now: datetime, seen: GaugeMetricFamily
) -> list[Metric]:
    g = ["garage"]
    occupancy = _gauge("facilities_garage_occupancy", "Bicycles inside the garage", g)
    capacity = _gauge("facilities_garage_capacity", "Bays of the garage", g)
    temp = _gauge("facilities_garage_temperature_celsius", "Garage temperature", g)
    smoke = _gauge("facilities_garage_smoke", "1 while a detector in the garage sees smoke", g)
    online = _gauge("facilities_garage_online", "1 when the garage controller is online", g)
    gate_open = _gauge("facilities_gate_open", "1 while the gate is open", ["garage", "gate"])
    info = _gauge(
        "facilities_garage_info",
        "A garage's community and names",
        ["garage", "community", "name", "name_en"],
    )
    for spec in site.garages.values():
        live = garages.get(spec.id)
        if live is None:
            continue
        info.add_metric([spec.id, spec.community, spec.name, spec.name_en], 1)
        _add(capacity, [spec.id], spec.capacity)
        _add(occupancy, [spec.id], live.occupancy)
        _add(temp, [spec.id], live.temp_c)
        _add(smoke, [spec.id], live.smoke)
        _add(online, [spec.id], live.online is True)
        if live.last_seen is not None:
            _add(seen, [spec.id, "garage"], max(0.0, (now - live.last_seen).total_seconds()))
        for gate_id in spec.gates:
            gate = live.gates.get(gate_id)
            _add(gate_open, [spec.id, gate_id], gate.open if gate else None)
    return [occupancy, capacity, temp, smoke, online, gate_open, info]


def _community_info(site: Site) -> Metric:
    info = _gauge(
        "facilities_community_info", "A community's names", ["community", "name", "name_en"]
    )
    for community in site.communities.values():
        info.add_metric([community.id, community.name, community.name_en], 1)
    return info


class DeviceCollector(Collector):
    """Device series read from the live state at scrape time; nothing while not running."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        yield from self._read()


class ServiceCollector(Collector):
    """The broker link and the open alerts, read at scrape time."""

    def __init__(
        self,
        *,
        connected: Callable[[], bool],
        reconnects: Callable[[], int],
        open_alerts: Callable[[], Iterable[tuple[str, str]]],
    ) -> None:
        self._connected = connected
        self._reconnects = reconnects
        self._open_alerts = open_alerts

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "facilities_broker_connected",
            "1 while the service's link to the broker is up",
            value=float(self._connected()),
        )
        yield CounterMetricFamily(
            "facilities_broker_reconnects",
            "Reconnections to the broker since the start",
            value=self._reconnects(),
        )
        alerts = GaugeMetricFamily(
            "facilities_alerts_open",
            "Open alerts (active or acknowledged), by rule and severity",
            labels=["rule", "severity"],
        )
        counts: dict[tuple[str, str], int] = {}
        for key in self._open_alerts():
            counts[key] = counts.get(key, 0) + 1
        for (rule, severity), count in sorted(counts.items()):
            alerts.add_metric([rule, severity], count)
        yield alerts
