"""Live state of a charging station and its ports, updated from telemetry and events."""

import bisect
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from facilities.charging.payloads import (
    PortReading,
    PortState,
    StationEvent,
    StationEventType,
    StationTelemetry,
)
from facilities.thresholds import Thresholds

# Short histories the rules read: the last few power samples (overload needs 2 in a row),
# and for temperature_rise the rising minima of the last window (see `_remember`), capped so
# that a device flooding telemetry cannot make the state grow.
POWER_SAMPLES_KEPT = 10
TEMPERATURES_KEPT = 256
FAULT_CRITICAL_CODES = frozenset({"over_current", "ground_fault", "over_temperature"})


class EndReason(StrEnum):
    """Why a charging session ended."""

    UNPLUG = "unplug"
    FULL = "full"
    NO_LOAD = "no_load"
    OVERLOAD = "overload"
    REMOTE = "remote"
    TOO_LONG = "too_long"
    FAULT = "fault"


@dataclass(frozen=True, slots=True)
class Session:
    """A finished charging session of one port."""

    station: str
    port: int
    started_at: datetime
    ended_at: datetime
    energy_wh: float
    peak_w: float
    end_reason: EndReason


@dataclass(slots=True)
class PortLive:
    port: int
    state: PortState = PortState.IDLE
    since: datetime | None = None  # when the current state began
    power_w: float | None = None
    energy_wh: float | None = None
    temp_c: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    powers: deque[float] = field(default_factory=lambda: deque(maxlen=POWER_SAMPLES_KEPT))
    temps: deque[tuple[datetime, float]] = field(
        default_factory=lambda: deque(maxlen=TEMPERATURES_KEPT)
    )
    session_started: datetime | None = None
    session_peak_w: float = 0.0
    session_energy_wh: float = 0.0
    # Why the port is about to go off, when the service itself switched it off (a rule's
    # power_off): the session then ends with that reason rather than `remote`.
    end_hint: EndReason | None = None
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
    temps: deque[tuple[datetime, float]] = field(
        default_factory=lambda: deque(maxlen=TEMPERATURES_KEPT)
    )
    fault_code: str | None = None  # an open station-wide `fault` event
    clock_skew_s: float | None = None  # device ts minus server time, last telemetry
    # The time and seq of the newest telemetry folded in, on the clock the windows use: the
    # device's while its clock is within `clock_skew_s` of the server's (`on_device_clock`),
    # else the receive time. A sample older than it, and sent before it (a lower seq), is
    # late: it joins the windows, nothing else.
    latest_at: datetime | None = None
    latest_seq: int | None = None
    on_device_clock: bool | None = None

    @classmethod
    def new(cls, station: str, ports: int) -> "StationLive":
        return cls(station, {n: PortLive(n) for n in range(1, ports + 1)})

    def restored(self) -> "StationLive":
        """Put back the bounds that a JSON round trip loses (deque maxlen)."""
        self.total_powers = deque(self.total_powers, maxlen=POWER_SAMPLES_KEPT)
        self.temps = deque(self.temps, maxlen=TEMPERATURES_KEPT)
        for port in self.ports.values():
            port.powers = deque(port.powers, maxlen=POWER_SAMPLES_KEPT)
            port.temps = deque(port.temps, maxlen=TEMPERATURES_KEPT)
        return self


def _remember(
    history: deque[tuple[datetime, float]], at: datetime, value: float, window: timedelta
) -> None:
    """Keep the minima of the last `window`, rising from front to back (a monotonic queue):
    the front is the lowest reading within the window, the back the newest reading, so the
    rise within the window is back − front, whatever the message rate."""
    while history and history[-1][1] >= value:
        history.pop()
    history.append((at, value))
    while at - history[0][0] > window:
        history.popleft()


def _remember_late(
    history: deque[tuple[datetime, float]], at: datetime, value: float, window: timedelta
) -> None:
    """A reading older than the newest one, put in its place in time: it matters only if it
    is the lowest of everything after it within the window of the newest reading (it may then
    be the start of a rise); older than that window it is history, and does not act."""
    if not history or history[-1][0] - at > window:
        return
    times = [when for when, _ in history]
    after = bisect.bisect_right(times, at)
    if after < len(history) and history[after][1] <= value:
        return  # a later reading is as low: the window's minima do not change
    start = after
    while start > 0 and history[start - 1][1] >= value:
        start -= 1
    kept = list(history)
    history.clear()
    history.extend([*kept[:start], (at, value), *kept[after:]])


def apply_telemetry(
    live: StationLive,
    message: StationTelemetry,
    at: datetime,
    thresholds: Thresholds,
    *,
    device_at: datetime | None = None,
) -> list[Session]:
    """Fold one telemetry message, received `at` (server clock), into the live state;
    return the charging sessions it ended. `device_at`: the message's own time when the
    device's clock can be trusted (docs/rules.md, "Device time"); windows and the order of
    samples are judged on it, timers on `at`."""
    live.last_seen = at
    live.online = True
    live.clock_skew_s = message.ts - at.timestamp()
    window = timedelta(seconds=thresholds.temp_rise_window_s)
    on_device = device_at is not None
    evidence = device_at or at
    if live.on_device_clock is not on_device:
        # readings on two clocks cannot share a window: start the windows again
        live.on_device_clock = on_device
        _restart_windows(live)
    if live.latest_at is not None and evidence < live.latest_at:
        if _sent_before(message.seq, live.latest_seq):
            _apply_late(live, message, evidence, window)
            return []
        # Sent after the newest, yet stamped earlier: the device's clock stepped back (or
        # the newest time was a glitch). Its readings are the current ones; only the windows,
        # which cannot span the step, start again.
        _restart_windows(live)
    live.latest_at, live.latest_seq = evidence, message.seq
    if message.temp_c is not None:
        live.temp_c = message.temp_c
        _remember(live.temps, evidence, message.temp_c, window)
    if message.leakage_ma is not None:
        live.leakage_ma = message.leakage_ma
    if message.smoke is not None:
        live.smoke = message.smoke
    ended = []
    for reading in message.ports:
        port = live.ports.get(reading.port) or live.ports.setdefault(
            reading.port, PortLive(reading.port)
        )
        session = _apply_port(live.station, port, reading, at, thresholds, evidence)
        if session is not None:
            ended.append(session)
    live.total_powers.append(sum(p.power_w or 0.0 for p in live.ports.values()))
    return ended


def _sent_before(seq: int, latest_seq: int | None) -> bool:
    """Whether a sample was sent before the newest one: a lower seq, but not 0 (a reboot
    starts again from 0: docs/protocol.md)."""
    return latest_seq is not None and 0 < seq <= latest_seq


def _restart_windows(live: StationLive) -> None:
    live.latest_at = live.latest_seq = None
    live.temps.clear()
    for port in live.ports.values():
        port.temps.clear()


def _apply_late(
    live: StationLive, message: StationTelemetry, evidence: datetime, window: timedelta
) -> None:
    """A sample older than the newest one (a device sending what it buffered): it is stored
    and shown in history, and joins the temperature windows in its place in time; it is never
    the current reading nor a sample 'in a row' (the power series keep the device's order)."""
    if message.temp_c is not None:
        _remember_late(live.temps, evidence, message.temp_c, window)
    for reading in message.ports:
        port = live.ports.get(reading.port)
        if port is not None and reading.temp_c is not None:
            _remember_late(port.temps, evidence, reading.temp_c, window)


_STATE_END_REASON = {
    PortState.IDLE: EndReason.UNPLUG,
    PortState.DISABLED: EndReason.REMOTE,
    PortState.FAULT: EndReason.FAULT,
}


def _apply_port(
    station: str,
    port: PortLive,
    reading: PortReading,
    at: datetime,
    t: Thresholds,
    evidence: datetime,
) -> Session | None:
    ended = None
    if reading.state is not port.state or port.since is None:
        if reading.state is PortState.CHARGING and port.session_started is None:
            start_session(port, at)
        default_reason = _STATE_END_REASON.get(reading.state)
        if default_reason is not None:
            reason = default_reason if reading.state is PortState.FAULT else None
            ended = end_session(station, port, at, reason or port.end_hint or default_reason)
        port.state, port.since = reading.state, at
    port.power_w = reading.power_w
    port.energy_wh = reading.energy_wh
    port.voltage_v = reading.voltage_v
    port.current_a = reading.current_a
    if reading.temp_c is not None:
        port.temp_c = reading.temp_c
        _remember(port.temps, evidence, reading.temp_c, timedelta(seconds=t.temp_rise_window_s))
    power = reading.power_w or 0.0
    port.powers.append(power)
    if port.session_started is not None:
        port.session_peak_w = max(port.session_peak_w, power)
        if reading.energy_wh is not None:
            port.session_energy_wh = reading.energy_wh
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
    return ended


def start_session(port: PortLive, at: datetime) -> None:
    port.session_started = at
    port.session_peak_w = 0.0
    port.session_energy_wh = 0.0
    port.end_hint = None


def end_session(station: str, port: PortLive, at: datetime, reason: EndReason) -> Session | None:
    """Close the port's session, if one is open; its energy is the last `energy_wh` seen."""
    if port.session_started is None:
        return None
    session = Session(
        station,
        port.port,
        port.session_started,
        at,
        port.session_energy_wh,
        port.session_peak_w,
        reason,
    )
    port.session_started = None
    port.session_peak_w = port.session_energy_wh = 0.0
    port.end_hint = None
    return session


def apply_event(live: StationLive, message: StationEvent, at: datetime) -> list[Session]:
    """Fold one station event into the live state; return the sessions it ended."""
    live.last_seen = at
    port = live.ports.setdefault(message.port, PortLive(message.port)) if message.port else None
    ended = None
    if message.type is StationEventType.FAULT:
        code = message.code or "fault"
        if port is not None:
            port.fault_code = code
            ended = end_session(live.station, port, at, EndReason.FAULT)
        else:
            live.fault_code = code
    elif message.type is StationEventType.FAULT_CLEARED:
        if port is not None:
            port.fault_code = None
        else:
            live.fault_code = None
    elif port is not None and message.type is StationEventType.PLUG_IN:
        if port.session_started is None:
            start_session(port, at)
    elif port is not None and message.type is StationEventType.UNPLUG:
        ended = end_session(live.station, port, at, port.end_hint or EndReason.UNPLUG)
    return [ended] if ended else []


def apply_availability(live: StationLive, online: bool, at: datetime) -> None:
    live.online = online
    if online:  # a replayed change (at start) never takes the last message back in time
        live.last_seen = max(live.last_seen or at, at)


def shown_state(port: PortLive) -> str:
    """What a resident is told of a port: its reported state, `fault` while a fault event is
    open, `unknown` until it has reported."""
    if port.since is None:
        return "unknown"
    return "fault" if port.fault_code is not None else port.state.value


def is_free(live: StationLive, port: PortLive, *, hazards: Collection[str]) -> bool:
    """Whether a resident may use the port now: the station online and without a fault, the
    port reported idle and without a fault, and no open critical alert on the station or the
    port (`hazards`: the subjects of open critical alerts). A cut the device never carried
    out leaves the port reporting `idle` under its alert: it is not free for all that."""
    return (
        live.online is True
        and live.fault_code is None
        and port.since is not None
        and port.state is PortState.IDLE
        and port.fault_code is None
        and live.station not in hazards
        and f"{live.station}/{port.port}" not in hazards
    )
