"""Charging rules of docs/rules.md: pure functions of live state, thresholds and the time.

A rule reports the subjects it finds firing, or within the hysteresis band of a limit (which
holds an open alert); every other subject of the station it evaluated is clear. Reporting
nothing in the common case keeps evaluation cheap: it runs on every message. The timers
(charge complete, no load, too long) are timer_rules.py's.
"""

import functools
from collections import deque
from collections.abc import Callable
from datetime import datetime

from facilities.charging.live import FAULT_CRITICAL_CODES, PortLive, StationLive
from facilities.charging.subjects import port_off, port_subject, station_off
from facilities.charging.timer_rules import TIMER_RULES, ChargingRule
from facilities.rule_ids import RuleId
from facilities.site import Station
from facilities.verdicts import (
    Action,
    ActionKind,
    Severity,
    Verdict,
    device_clock_skew,
    device_offline,
    over,
)


def _last_n_over(samples: deque[float], n: int, limit: float) -> bool:
    if len(samples) < n:
        return False
    return all(samples[-i] > limit for i in range(1, n + 1))


def _sustained(
    rule: RuleId,
    subject: str,
    samples: deque[float],
    spec_limit: float,
    spec: Station,
    actions: Callable[[], tuple[Action, ...]],
) -> list[Verdict]:
    """Over `spec_limit` in `overload_samples` samples in a row (docs/rules.md, "Charging
    rules": "2 samples in a row")."""
    t = spec.thresholds
    if not samples or samples[-1] < t.hysteresis * spec_limit:
        return []
    firing = _last_n_over(samples, t.overload_samples, spec_limit)
    return [
        Verdict(
            rule,
            subject,
            firing,
            Severity.CRITICAL,
            clearable=False,
            value=samples[-1],
            actions=actions() if firing else (),
        )
    ]


def port_overload(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """A port over its rated power in `overload_samples` samples in a row: power it off."""
    verdicts = []
    low = spec.thresholds.hysteresis * spec.port_max_w
    for port in live.ports.values():
        if not port.powers or port.powers[-1] < low:
            continue  # as `_sustained` finds, without naming the port: the common case
        verdicts += _sustained(
            RuleId.PORT_OVERLOAD,
            port_subject(spec.id, port.port),
            port.powers,
            spec.port_max_w,
            spec,
            functools.partial(port_off, spec.id, port.port),
        )
    return verdicts


def station_overload(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """The station over its supply in 2 samples in a row: shed ports, newest session first."""
    return _sustained(
        RuleId.STATION_OVERLOAD,
        spec.id,
        live.total_powers,
        spec.station_max_w,
        spec,
        lambda: shed_load(live, spec.station_max_w),
    )


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
    low = t.hysteresis * t.port_temp_max_c
    for port in live.ports.values():
        if port.temp_c is None or port.temp_c < low:
            continue  # as `over` finds, without naming the port: the common case
        verdicts += over(
            RuleId.PORT_OVER_TEMPERATURE,
            port_subject(spec.id, port.port),
            port.temp_c,
            t.port_temp_max_c,
            severity=Severity.CRITICAL,
            hysteresis=t.hysteresis,
            actions=port_off(spec.id, port.port),
        )
    return verdicts


def over_temperature(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """The cabinet: a warning from `cabinet_temp_warn_c`, critical (power off) from max."""
    t = spec.thresholds
    if live.temp_c is not None and live.temp_c >= t.cabinet_temp_max_c:
        return over(
            RuleId.OVER_TEMPERATURE,
            spec.id,
            live.temp_c,
            t.cabinet_temp_max_c,
            severity=Severity.CRITICAL,
            hysteresis=t.hysteresis,
            actions=station_off(spec.id),
        )
    return over(
        RuleId.OVER_TEMPERATURE,
        spec.id,
        live.temp_c,
        t.cabinet_temp_warn_c,
        severity=Severity.WARNING,
        hysteresis=t.hysteresis,
    )


def _rise(history: deque[tuple[datetime, float]]) -> float:
    """How far the last reading is above the lowest one within the window before it (the
    history keeps the window's rising minima: see charging.windows.remember)."""
    return history[-1][1] - history[0][1] if history else 0.0


def temperature_rise(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """A port or the cabinet warming by `temp_rise_c` within `temp_rise_window_s`."""
    t = spec.thresholds
    verdicts = []
    low = t.hysteresis * t.temp_rise_c
    for port in live.ports.values():
        temps = port.temps  # _rise, inline: ten ports a message, most with nothing to say
        if temps and temps[-1][1] - temps[0][1] >= low:  # else `over` finds nothing
            verdicts += over(
                RuleId.TEMPERATURE_RISE,
                port_subject(spec.id, port.port),
                _rise(temps),
                t.temp_rise_c,
                severity=Severity.CRITICAL,
                hysteresis=t.hysteresis,
                actions=port_off(spec.id, port.port),
            )
    if live.temps:
        verdicts += over(
            RuleId.TEMPERATURE_RISE,
            spec.id,
            _rise(live.temps),
            t.temp_rise_c,
            severity=Severity.CRITICAL,
            hysteresis=t.hysteresis,
            actions=station_off(spec.id),
        )
    return verdicts


def leakage(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """Residual current at or over 30 mA (the socket-circuit RCD rule): station off."""
    t = spec.thresholds
    return over(
        RuleId.LEAKAGE,
        spec.id,
        live.leakage_ma,
        t.leakage_max_ma,
        severity=Severity.CRITICAL,
        hysteresis=t.hysteresis,
        actions=station_off(spec.id),
    )


def smoke(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """The cabinet's smoke detector: station off."""
    if not live.smoke:
        return []
    return [Verdict(RuleId.SMOKE, spec.id, True, Severity.CRITICAL, actions=station_off(spec.id))]


def device_fault(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """An open `fault` event (until `fault_cleared`); critical for dangerous codes."""
    faults = [(spec.id, live.fault_code)] + [
        (port_subject(spec.id, p.port), p.fault_code)
        for p in live.ports.values()
        if p.fault_code is not None
    ]
    return [
        Verdict(
            RuleId.DEVICE_FAULT,
            subject,
            True,
            Severity.CRITICAL if code in FAULT_CRITICAL_CODES else Severity.WARNING,
        )
        for subject, code in faults
        if code is not None
    ]


def offline(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """Availability `offline`, or no message for `offline_intervals` telemetry intervals."""
    return device_offline(spec.id, live.online, live.last_seen, spec.thresholds, now)


def clock_skew(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """The device's clock more than 10 min off the server's (rules use the receive time)."""
    return device_clock_skew(spec.id, live.clock_skew_s, spec.thresholds)


# Evaluated on every message from the station: what a message can make true at once.
EVIDENCE_RULES: dict[RuleId, ChargingRule] = {
    RuleId.PORT_OVERLOAD: port_overload,
    RuleId.STATION_OVERLOAD: station_overload,
    RuleId.PORT_OVER_TEMPERATURE: port_over_temperature,
    RuleId.OVER_TEMPERATURE: over_temperature,
    RuleId.TEMPERATURE_RISE: temperature_rise,
    RuleId.LEAKAGE: leakage,
    RuleId.SMOKE: smoke,
    RuleId.DEVICE_FAULT: device_fault,
    RuleId.OFFLINE: offline,
    RuleId.CLOCK_SKEW: clock_skew,
}
CHARGING_RULES: dict[RuleId, ChargingRule] = EVIDENCE_RULES | TIMER_RULES
