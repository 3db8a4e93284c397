"""A charging station's live state updated from telemetry and events: ports, sessions, windows."""

# The state's types are `live.py`'s, the temperature windows `windows.py`'s.

import functools
from datetime import datetime, timedelta

from facilities.charging.live import EndReason, PortLive, Session, StationLive
from facilities.charging.payloads import (
    PortReading,
    PortState,
    StationEvent,
    StationEventType,
    StationTelemetry,
)
from facilities.charging.windows import remember, remember_late
from facilities.thresholds import Thresholds

# The state's types, importable from here too (the live state and the replay read them).
__all__ = [
    "EndReason",
    "PortLive",
    "Session",
    "StationLive",
    "apply_availability",
    "apply_event",
    "apply_telemetry",
    "end_session",
    "start_session",
]


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
    window = _window(thresholds.temp_rise_window_s)
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
        remember(live.temps, evidence, message.temp_c, window)
    if message.leakage_ma is not None:
        live.leakage_ma = message.leakage_ma
    if message.smoke is not None:
        live.smoke = message.smoke
    ended = []
    for reading in message.ports:
        port = live.ports.get(reading.port) or live.ports.setdefault(
            reading.port, PortLive(reading.port)
        )
        session = _apply_port(live.station, port, reading, at, thresholds, evidence, window)
        if session is not None:
            ended.append(session)
    live.total_powers.append(sum([p.power_w or 0.0 for p in live.ports.values()]))
    return ended


@functools.lru_cache(maxsize=64)
def _window(seconds: float) -> timedelta:
    """The temperature windows' length: made once per value, not once per message (making a
    `timedelta` took ~1 µs here)."""
    return timedelta(seconds=seconds)


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
        remember_late(live.temps, evidence, message.temp_c, window)
    for reading in message.ports:
        port = live.ports.get(reading.port)
        if port is not None and reading.temp_c is not None:
            remember_late(port.temps, evidence, reading.temp_c, window)


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
    window: timedelta,
) -> Session | None:
    ended = None
    # A port reported charging is in a session: it starts when the port enters `charging`,
    # and again at the next report when a fault event ended it while the port kept charging
    # (charging to charging is no change of state; without a session, `session_too_long`
    # could never cut it).
    if reading.state is PortState.CHARGING and port.session_started is None:
        start_session(port, at)
    if reading.state is not port.state or port.since is None:
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
        remember(port.temps, evidence, reading.temp_c, window)
    power = reading.power_w or 0.0
    port.powers.append(power)
    if port.session_started is not None:
        if power > port.session_peak_w:
            port.session_peak_w = power
        if reading.energy_wh is not None:
            port.session_energy_wh = reading.energy_wh
    state = port.state
    plugged = state is PortState.CHARGING or state is PortState.FULL
    port.low_power_since = (
        (port.low_power_since or at) if plugged and power < t.charge_complete_w else None
    )
    unloaded = (
        state is PortState.CHARGING
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
