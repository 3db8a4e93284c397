"""Live state → the API's public models. Pure: the caller holds the engine's lock."""

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime, timedelta

from facilities.alerts import Alert, hazards
from facilities.api import models
from facilities.charging.live import PortLive, StationLive, is_free, shown_state
from facilities.charging.payloads import PortState
from facilities.cutoffs import Cutoff
from facilities.estimates import Typical, charge_done_at
from facilities.garage.state import GarageLive
from facilities.rule_ids import RuleId
from facilities.site import Garage, Site, Station
from facilities.switch_on import Blocker


def alert_brief(alert: Alert) -> models.AlertBrief:
    """What the public sees of an alert (a station's or garage's `alerts`, the live stream)."""
    return models.AlertBrief(
        id=alert.id,
        rule=alert.rule,
        subject=alert.subject,
        severity=alert.severity.value,
        state=alert.state.value,
    )


def alerts_of(device: str, alerts: Iterable[Alert]) -> list[models.AlertBrief]:
    """Open alerts of a device and its parts (`cs-07`, `cs-07/3`), most severe first."""
    mine = [a for a in alerts if a.subject == device or a.subject.startswith(device + "/")]
    order = {"critical": 0, "warning": 1, "info": 2}
    mine.sort(key=lambda a: (order.get(a.severity.value, 3), a.subject, a.rule))
    return [alert_brief(a) for a in mine]


def _faulty(spec: Station, live: StationLive, critical: frozenset[str]) -> bool:
    """A fault reported, or a critical alert open on the station or one of its ports."""
    if live.fault_code is not None or any(
        p.fault_code is not None or p.state is PortState.FAULT for p in live.ports.values()
    ):
        return True
    return any(s == spec.id or s.startswith(spec.id + "/") for s in critical)


def station(spec: Station, live: StationLive, alerts: Iterable[Alert]) -> models.Station:
    alerts = list(alerts)
    ports = [live.ports[n] for n in sorted(live.ports) if n <= spec.ports]
    critical = hazards(alerts)
    return models.Station(
        id=spec.id,
        community=spec.community,
        garage=spec.garage,
        name=spec.name,
        name_en=spec.name_en,
        online=live.online is True,
        ports_total=spec.ports,
        ports_free=sum(is_free(live, p, hazards=critical) for p in ports),
        power_w=round(sum(p.power_w or 0.0 for p in ports), 1),
        fault=_faulty(spec, live, critical),
        last_seen=live.last_seen,
    )


def station_detail(
    spec: Station,
    live: StationLive,
    alerts: Iterable[Alert],
    *,
    typical: Typical,
    now: datetime,
) -> models.StationDetail:
    alerts = list(alerts)
    critical = hazards(alerts)
    ports = []
    for number in range(1, spec.ports + 1):
        port = live.ports.get(number) or PortLive(number)
        estimate = charge_done_at(
            port,
            typical,
            now,
            trickle_w=spec.thresholds.charge_complete_w,
            longest=timedelta(seconds=spec.thresholds.session_max_s),
        )
        ports.append(
            models.Port(
                port=number,
                state=models.PortStatus(shown_state(port)),
                free=is_free(live, port, hazards=critical),
                power_w=port.power_w,
                energy_wh=port.energy_wh,
                temp_c=port.temp_c,
                since=port.since,
                free_estimate_at=estimate,
            )
        )
    return models.StationDetail(
        **station(spec, live, alerts).model_dump(),
        temp_c=live.temp_c,
        leakage_ma=live.leakage_ma,
        smoke=live.smoke,
        ports=ports,
        alerts=alerts_of(spec.id, alerts),
    )


def smoke_alert(garage_id: str, alerts: Iterable[Alert]) -> bool:
    """Whether the garage's `smoke` alert is open: its warning stays up until the alert
    clears, not only while the latest reading says smoke."""
    return any(a.rule == RuleId.SMOKE and a.subject == garage_id and a.open for a in alerts)


def garage(spec: Garage, live: GarageLive, alerts: Iterable[Alert]) -> models.Garage:
    free = None if live.occupancy is None else max(spec.capacity - live.occupancy, 0)
    return models.Garage(
        id=spec.id,
        community=spec.community,
        name=spec.name,
        name_en=spec.name_en,
        online=live.online is True,
        capacity=spec.capacity,
        occupancy=live.occupancy,
        free=free,
        full=free == 0,
        last_seen=live.last_seen,
        smoke_alert=smoke_alert(spec.id, alerts),
    )


def garage_detail(spec: Garage, live: GarageLive, alerts: Iterable[Alert]) -> models.GarageDetail:
    alerts = list(alerts)
    gates = []
    for gate_id in spec.gates:
        gate = live.gates.get(gate_id)
        names = spec.gate_name(gate_id)
        gates.append(
            models.Gate(
                gate=gate_id,
                name=names.name,
                name_en=names.name_en,
                open=gate.open if gate else None,
                since=gate.since if gate else None,
                last_event=gate.last_event.value if gate and gate.last_event else None,
                last_event_at=gate.last_event_at if gate else None,
            )
        )
    return models.GarageDetail(
        **garage(spec, live, alerts).model_dump(),
        temp_c=live.temp_c,
        smoke=live.smoke,
        gates=gates,
        stations=list(spec.stations),
        alerts=alerts_of(spec.id, alerts),
    )


def communities(
    site: Site,
    stations: Mapping[str, StationLive],
    garages: Mapping[str, GarageLive],
    alerts: Iterable[Alert],
) -> list[models.Community]:
    alerts = list(alerts)
    found = []
    for community in site.communities.values():
        mine = [
            station(s, stations[s.id], alerts)
            for s in site.stations.values()
            if s.community == community.id and s.id in stations
        ]
        bays = [
            garage(g, garages[g.id], alerts)
            for g in site.garages.values()
            if g.community == community.id and g.id in garages
        ]
        found.append(
            models.Community(
                id=community.id,
                name=community.name,
                name_en=community.name_en,
                stations=[s.id for s in mine],
                ports_total=sum(s.ports_total for s in mine),
                ports_free=sum(s.ports_free for s in mine),
                garages=[g.id for g in bays],
                capacity=sum(g.capacity for g in bays),
                free_bays=sum(g.free or 0 for g in bays),
            )
        )
    return found


def cutoffs(
    desired: Iterable[Cutoff],
    blockers: Callable[[str, Collection[int]], Mapping[int, list[Blocker]]],
) -> models.Cutoffs:
    """What the service switched off or holds open, why and since when (docs/rules.md,
    "Desired state"); for each port, why switching it on would be refused now (`blockers`,
    asked once per station for the ports listed)."""
    desired = list(desired)
    ports: dict[str, set[int]] = {}
    for c in desired:
        if c.gate is None and c.port is not None:
            ports.setdefault(c.device, set()).add(c.port)
    held_off = {
        (device, port): [
            models.SwitchOnBlocker(
                reason=b.hold.value, rule=b.rule, subject=b.subject, alert_id=b.alert_id
            )
            for b in found
        ]
        for device, numbers in ports.items()
        for port, found in blockers(device, sorted(numbers)).items()
    }
    items = []
    for c in desired:
        gate = c.gate is not None
        items.append(
            models.Cutoff(
                device=c.device,
                kind=models.CutoffKind.GATE_OPEN if gate else models.CutoffKind.PORT_OFF,
                port=c.port,
                gate=c.gate,
                whole_station=c.whole_station,
                rule=c.rule,
                alert_id=c.alert_id,
                subject=c.subject,
                since=c.since,
                held=c.held,
                confirmed=c.confirmed,
                switch_on=None if gate else f"POST /api/stations/{c.device}/ports/{c.port}/power",
                switch_on_blocked=[] if gate else held_off.get((c.device, c.port or 0), []),
            )
        )
    return models.Cutoffs(items=items)
