"""Charging rules of RULES.md: pure functions of live state, thresholds and the time."""

import functools
from collections import deque
from collections.abc import Callable
from datetime import datetime

from facilities.charging.payloads import PortState
from facilities.charging.state import FAULT_CRITICAL_CODES, PortLive, StationLive
from facilities.rules.verdicts import Action, ActionKind, Severity, Verdict, over
from facilities.site import Station

ChargingRule = Callable[[StationLive, Station, datetime], list[Verdict]]


@functools.cache
def port_subject(station: str, port: int) -> str:
    return f"{station}/{port}"


@functools.cache
def _port_off(station: str, port: int) -> tuple[Action, ...]:
    return (Action(ActionKind.POWER_OFF_PORT, station, port=port),)


@functools.cache
def _station_off(station: str) -> tuple[Action, ...]:
    return (Action(ActionKind.POWER_OFF_STATION, station),)


def _last_n_over(samples: deque[float], n: int, limit: float) -> bool:
    return len(samples) >= n and all(s > limit for s in list(samples)[-n:])


def port_overload(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """A port over its rated power in `overload_samples` samples in a row: power it off."""
    t = spec.thresholds
    verdicts = []
    for port in live.ports.values():
        if not port.powers:
            continue
        firing = _last_n_over(port.powers, t.overload_samples, spec.port_max_w)
        verdicts.append(
            Verdict(
                "port_overload",
                port_subject(spec.id, port.port),
                firing=firing,
                severity=Severity.CRITICAL,
                clearable=port.powers[-1] < t.hysteresis * spec.port_max_w,
                value=port.powers[-1],
                actions=_port_off(spec.id, port.port) if firing else (),
            )
        )
    return verdicts


def station_overload(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """The station over its supply in 2 samples in a row: shed ports, newest session first."""
    t = spec.thresholds
    if not live.total_powers:
        return []
    total = live.total_powers[-1]
    firing = _last_n_over(live.total_powers, t.overload_samples, spec.station_max_w)
    return [
        Verdict(
            "station_overload",
            spec.id,
            firing=firing,
            severity=Severity.CRITICAL,
            clearable=total < t.hysteresis * spec.station_max_w,
            value=total,
            actions=shed_load(live, spec.station_max_w) if firing else (),
        )
    ]


def shed_load(live: StationLive, limit_w: float) -> tuple[Action, ...]:
    """Ports to power off, most recently started first, until the rest is under `limit_w`."""
    drawing = [p for p in live.ports.values() if (p.power_w or 0.0) > 0]
    drawing.sort(key=_started, reverse=True)
    total = sum(p.power_w or 0.0 for p in drawing)
    actions = []
    for port in drawing:
        if total <= limit_w:
            break
        actions.append(Action(ActionKind.POWER_OFF_PORT, live.station, port=port.port))
        total -= port.power_w or 0.0
    return tuple(actions)


def _started(port: PortLive) -> tuple[float, int]:
    started = port.session_started or port.since
    return (started.timestamp() if started else 0.0, port.port)


def port_over_temperature(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """A socket at or over `port_temp_max_c`: power the port off."""
    t = spec.thresholds
    verdicts = []
    for port in live.ports.values():
        verdicts += over(
            "port_over_temperature",
            port_subject(spec.id, port.port),
            port.temp_c,
            t.port_temp_max_c,
            severity=Severity.CRITICAL,
            hysteresis=t.hysteresis,
            actions=_port_off(spec.id, port.port),
        )
    return verdicts


def over_temperature(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """The cabinet: a warning from `cabinet_temp_warn_c`, critical (power off) from max."""
    t = spec.thresholds
    if live.temp_c is None:
        return []
    if live.temp_c >= t.cabinet_temp_max_c:
        return over(
            "over_temperature",
            spec.id,
            live.temp_c,
            t.cabinet_temp_max_c,
            severity=Severity.CRITICAL,
            hysteresis=t.hysteresis,
            actions=_station_off(spec.id),
        )
    return over(
        "over_temperature",
        spec.id,
        live.temp_c,
        t.cabinet_temp_warn_c,
        severity=Severity.WARNING,
        hysteresis=t.hysteresis,
    )


def _rise(history: deque[tuple[datetime, float]]) -> float:
    """How far the last reading is above the lowest one within the window before it (the
    history keeps the window's rising minima: see charging.state._remember)."""
    return history[-1][1] - history[0][1] if history else 0.0


def temperature_rise(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """A port or the cabinet warming by `temp_rise_c` within `temp_rise_window_s`."""
    t = spec.thresholds
    verdicts = []
    for port in live.ports.values():
        if port.temps:
            verdicts += over(
                "temperature_rise",
                port_subject(spec.id, port.port),
                _rise(port.temps),
                t.temp_rise_c,
                severity=Severity.CRITICAL,
                hysteresis=t.hysteresis,
                actions=_port_off(spec.id, port.port),
            )
    if live.temps:
        verdicts += over(
            "temperature_rise",
            spec.id,
            _rise(live.temps),
            t.temp_rise_c,
            severity=Severity.CRITICAL,
            hysteresis=t.hysteresis,
            actions=_station_off(spec.id),
        )
    return verdicts


def leakage(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """Residual current at or over 30 mA (the socket-circuit RCD rule): station off."""
    t = spec.thresholds
    return over(
        "leakage",
        spec.id,
        live.leakage_ma,
        t.leakage_max_ma,
        severity=Severity.CRITICAL,
        hysteresis=t.hysteresis,
        actions=_station_off(spec.id),
    )


def smoke(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """The cabinet's smoke detector: station off."""
    if live.smoke is None:
        return []
    return [
        Verdict(
            "smoke",
            spec.id,
            firing=live.smoke,
            severity=Severity.CRITICAL,
            actions=_station_off(spec.id) if live.smoke else (),
        )
    ]


def _timer(
    rule: str,
    spec: Station,
    port: PortLive,
    started: datetime | None,
    after_s: float,
    now: datetime,
    severity: Severity,
    *,
    strictly: bool = False,
) -> Verdict:
    elapsed = (now - started).total_seconds() if started else 0.0
    firing = started is not None and (elapsed > after_s if strictly else elapsed >= after_s)
    return Verdict(
        rule,
        port_subject(spec.id, port.port),
        firing=firing,
        severity=severity,
        value=elapsed,
        actions=_port_off(spec.id, port.port) if firing else (),
    )


def charge_complete(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """Plugged in and drawing under `charge_complete_w` for 120 min (充满自停): port off."""
    t = spec.thresholds
    return [
        _timer(
            "charge_complete", spec, p, p.low_power_since, t.charge_complete_s, now, Severity.INFO
        )
        for p in live.ports.values()
    ]


def no_load(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """Switched on, nothing drawing and nothing delivered for 5 min: port off."""
    t = spec.thresholds
    return [
        _timer("no_load", spec, p, p.no_load_since, t.no_load_s, now, Severity.INFO)
        for p in live.ports.values()
    ]


def session_too_long(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """Charging for more than 8 h: port off."""
    t = spec.thresholds
    verdicts = []
    for port in live.ports.values():
        started = port.session_started if port.state is PortState.CHARGING else None
        # RULES.md: "more than 8 h", strictly
        verdicts.append(
            _timer(
                "session_too_long",
                spec,
                port,
                started,
                t.session_max_s,
                now,
                Severity.WARNING,
                strictly=True,
            )
        )
    return verdicts


def device_fault(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """An open `fault` event (until `fault_cleared`); critical for dangerous codes."""
    verdicts = []
    subjects = [(spec.id, live.fault_code)] + [
        (port_subject(spec.id, p.port), p.fault_code) for p in live.ports.values()
    ]
    for subject, code in subjects:
        severity = Severity.CRITICAL if code in FAULT_CRITICAL_CODES else Severity.WARNING
        verdicts.append(
            Verdict("device_fault", subject, firing=code is not None, severity=severity)
        )
    return verdicts


def offline(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """Availability `offline`, or no message for `offline_intervals` telemetry intervals."""
    t = spec.thresholds
    if live.online is None and live.last_seen is None:
        return []  # never heard of since start: nothing to say yet
    silent_s = (now - live.last_seen).total_seconds() if live.last_seen else None
    stale = silent_s is not None and silent_s >= t.telemetry_interval_s * t.offline_intervals
    return [
        Verdict(
            "offline",
            spec.id,
            firing=live.online is False or stale,
            severity=Severity.WARNING,
            value=silent_s,
        )
    ]


def clock_skew(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """The device's clock more than 10 min off the server's (rules use the receive time)."""
    if live.clock_skew_s is None:
        return []
    skew = abs(live.clock_skew_s)
    return [
        Verdict(
            "clock_skew",
            spec.id,
            firing=skew > spec.thresholds.clock_skew_s,
            severity=Severity.INFO,
            value=live.clock_skew_s,
        )
    ]


# Evaluated on every message from the station: what a message can make true at once.
EVIDENCE_RULES: tuple[ChargingRule, ...] = (
    port_overload,
    station_overload,
    port_over_temperature,
    over_temperature,
    temperature_rise,
    leakage,
    smoke,
    device_fault,
    offline,
    clock_skew,
)
# Timers: only the clock makes them true, so the tick (every second) evaluates them.
TIMER_RULES: tuple[ChargingRule, ...] = (charge_complete, no_load, session_too_long)
CHARGING_RULES: tuple[ChargingRule, ...] = EVIDENCE_RULES + TIMER_RULES
