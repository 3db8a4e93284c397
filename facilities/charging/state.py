"""Live state of a charging station and its ports, updated from telemetry and events."""

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from facilities.charging.payloads import (
    PortReading,
    PortState,
    StationEvent,
    StationEventType,
    StationTelemetry,
)
from facilities.rules.thresholds import Thresholds

# Short histories the rules read: the last few power samples (overload needs 2 in a row)
# and temperatures over a window a little longer than temperature_rise's 60 s.
POWER_SAMPLES_KEPT = 10
TEMPERATURE_HISTORY = timedelta(minutes=10)
FAULT_CRITICAL_CODES = frozenset({"over_current", "ground_fault", "over_temperature"})


@dataclass(slots=True)
class PortLive:
    port: int
    state: PortState = PortState.IDLE
    since: datetime | None = None  # when the current state began
    power_w: float | None = None
    energy_wh: float | None = None
    temp_c: float | None = None
    powers: deque[float] = field(default_factory=lambda: deque(maxlen=POWER_SAMPLES_KEPT))
    temps: deque[tuple[datetime, float]] = field(default_factory=deque)
    session_started: datetime | None = None
    session_peak_w: float = 0.0
    low_power_since: datetime | None = None  # charge_complete: drawing < charge_complete_w
    no_load_since: datetime | None = None  # no_load: on, < no_load_w, < no_load_wh
    fault_code: str | None = None  # an open `fault` event on this port


@dataclass(slots=True)
class StationLive:
    station: str
    ports: dict[int, PortLive] = field(default_factory=dict)
    online: bool | None = None
    last_seen: datetime | None = None
    temp_c: float | None = None
    leakage_ma: float | None = None
    smoke: bool | None = None
    total_powers: deque[float] = field(default_factory=lambda: deque(maxlen=POWER_SAMPLES_KEPT))
    temps: deque[tuple[datetime, float]] = field(default_factory=deque)
    fault_code: str | None = None  # an open station-wide `fault` event
    clock_skew_s: float | None = None  # device ts minus server time, last telemetry

    @classmethod
    def new(cls, station: str, ports: int) -> "StationLive":
        return cls(station, {n: PortLive(n) for n in range(1, ports + 1)})


def _remember(history: deque[tuple[datetime, float]], at: datetime, value: float) -> None:
    history.append((at, value))
    while history and at - history[0][0] > TEMPERATURE_HISTORY:
        history.popleft()


def apply_telemetry(
    live: StationLive, message: StationTelemetry, at: datetime, thresholds: Thresholds
) -> None:
    """Fold one telemetry message, received `at` (server clock), into the live state."""
    live.last_seen = at
    live.online = True
    live.clock_skew_s = message.ts - at.timestamp()
    if message.temp_c is not None:
        live.temp_c = message.temp_c
        _remember(live.temps, at, message.temp_c)
    if message.leakage_ma is not None:
        live.leakage_ma = message.leakage_ma
    if message.smoke is not None:
        live.smoke = message.smoke
    for reading in message.ports:
        port = live.ports.setdefault(reading.port, PortLive(reading.port))
        _apply_port(port, reading, at, thresholds)
    live.total_powers.append(sum(p.power_w or 0.0 for p in live.ports.values()))


def _apply_port(port: PortLive, reading: PortReading, at: datetime, t: Thresholds) -> None:
    if reading.state is not port.state or port.since is None:
        if reading.state is PortState.CHARGING and port.state is not PortState.FULL:
            port.session_started = port.session_started or at
        if reading.state in (PortState.IDLE, PortState.DISABLED, PortState.FAULT):
            port.session_started = None
            port.session_peak_w = 0.0
        port.state, port.since = reading.state, at
    port.power_w = reading.power_w
    port.energy_wh = reading.energy_wh
    if reading.temp_c is not None:
        port.temp_c = reading.temp_c
        _remember(port.temps, at, reading.temp_c)
    power = reading.power_w or 0.0
    port.powers.append(power)
    if port.session_started is not None:
        port.session_peak_w = max(port.session_peak_w, power)
    plugged = port.state in (PortState.CHARGING, PortState.FULL)
    port.low_power_since = (
        (port.low_power_since or at) if plugged and power < t.charge_complete_w else None
    )
    unloaded = (
        port.state is PortState.CHARGING
        and power < t.no_load_w
        and (reading.energy_wh or 0.0) < t.no_load_wh
    )
    port.no_load_since = (port.no_load_since or at) if unloaded else None


def apply_event(live: StationLive, message: StationEvent, at: datetime) -> None:
    """Fold one station event into the live state."""
    live.last_seen = at
    port = live.ports.setdefault(message.port, PortLive(message.port)) if message.port else None
    if message.type is StationEventType.FAULT:
        code = message.code or "fault"
        if port is not None:
            port.fault_code = code
        else:
            live.fault_code = code
    elif message.type is StationEventType.FAULT_CLEARED:
        if port is not None:
            port.fault_code = None
        else:
            live.fault_code = None
    elif port is not None and message.type is StationEventType.PLUG_IN:
        port.session_started = port.session_started or at
    elif port is not None and message.type is StationEventType.UNPLUG:
        port.session_started = None
        port.session_peak_w = 0.0


def apply_availability(live: StationLive, online: bool, at: datetime) -> None:
    live.online = online
    if online:
        live.last_seen = at
