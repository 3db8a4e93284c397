"""Garage rules of docs/rules.md: pure functions of live state, thresholds and the time.

As for charging rules: a rule reports what fires (or sits in a hysteresis band); every other
subject of the garage it evaluated is clear.
"""

from collections.abc import Callable
from datetime import datetime, timedelta

from facilities.garage.state import GarageLive
from facilities.rule_ids import RuleId
from facilities.site import Garage
from facilities.verdicts import (
    Action,
    ActionKind,
    Severity,
    Verdict,
    device_clock_skew,
    device_offline,
    over,
)

GarageRule = Callable[[GarageLive, Garage, datetime], list[Verdict]]


def gate_subject(garage: str, gate: str) -> str:
    return f"{garage}/{gate}"


def smoke(live: GarageLive, spec: Garage, now: datetime) -> list[Verdict]:
    """Smoke in a garage: every station inside off (fire linkage) and, when
    `fire_release_gates`, every gate open for evacuation."""
    if not live.smoke:
        return []
    actions = tuple(Action(ActionKind.POWER_OFF_STATION, s) for s in spec.stations)
    if spec.thresholds.fire_release_gates:
        actions += tuple(Action(ActionKind.OPEN_GATE, spec.id, gate=g) for g in spec.gates)
    return [Verdict(RuleId.SMOKE, spec.id, True, Severity.CRITICAL, actions=actions)]


def over_temperature(live: GarageLive, spec: Garage, now: datetime) -> list[Verdict]:
    t = spec.thresholds
    return over(
        RuleId.OVER_TEMPERATURE,
        spec.id,
        live.temp_c,
        t.garage_temp_max_c,
        severity=Severity.WARNING,
        hysteresis=t.hysteresis,
    )


def over_capacity(live: GarageLive, spec: Garage, now: datetime) -> list[Verdict]:
    """More bicycles than bays (occupancy > capacity)."""
    if live.occupancy is None or spec.capacity == 0:
        return []
    return over(
        RuleId.OVER_CAPACITY,
        spec.id,
        float(live.occupancy),
        float(spec.capacity),
        severity=Severity.WARNING,
        hysteresis=spec.thresholds.hysteresis,
        inclusive=False,
    )


def gate_held_open(live: GarageLive, spec: Garage, now: datetime) -> list[Verdict]:
    """A gate opened and not closed within `gate_held_open_s`."""
    limit = spec.thresholds.gate_held_open_s
    verdicts = []
    for gate in live.gates.values():
        held = (now - gate.since).total_seconds() if gate.open and gate.since else 0.0
        if held >= limit:
            verdicts.append(
                Verdict(RuleId.GATE_HELD_OPEN, gate_subject(spec.id, gate.gate), True, value=held)
            )
    return verdicts


def gate_forced(live: GarageLive, spec: Garage, now: datetime) -> list[Verdict]:
    """A `forced_open` event: fires for `clear_after_s` after each one, then may clear."""
    window = timedelta(seconds=spec.thresholds.clear_after_s)
    return [
        Verdict(RuleId.GATE_FORCED, gate_subject(spec.id, gate.gate), True, Severity.CRITICAL)
        for gate in live.gates.values()
        if gate.forced_at is not None and now - gate.forced_at <= window
    ]


def access_denied_burst(live: GarageLive, spec: Garage, now: datetime) -> list[Verdict]:
    """`denied_burst_count` refusals at one gate within `denied_burst_window_s` (spaced on the
    device's clock when trusted), for as long as the newest was received within the window."""
    t = spec.thresholds
    window = timedelta(seconds=t.denied_burst_window_s)
    verdicts = []
    for gate in live.gates.values():
        seen = gate.denied_seen_at
        if not gate.denied or seen is None or now - seen > window:
            continue
        newest = gate.denied[-1]
        recent = sum(1 for at in gate.denied if newest - at <= window)
        if recent >= t.denied_burst_count:
            verdicts.append(
                Verdict(
                    RuleId.ACCESS_DENIED_BURST,
                    gate_subject(spec.id, gate.gate),
                    True,
                    value=float(recent),
                )
            )
    return verdicts


def offline(live: GarageLive, spec: Garage, now: datetime) -> list[Verdict]:
    return device_offline(spec.id, live.online, live.last_seen, spec.thresholds, now)


def clock_skew(live: GarageLive, spec: Garage, now: datetime) -> list[Verdict]:
    return device_clock_skew(spec.id, live.clock_skew_s, spec.thresholds)


GARAGE_RULES: dict[RuleId, GarageRule] = {
    RuleId.SMOKE: smoke,
    RuleId.OVER_TEMPERATURE: over_temperature,
    RuleId.OVER_CAPACITY: over_capacity,
    RuleId.GATE_HELD_OPEN: gate_held_open,
    RuleId.GATE_FORCED: gate_forced,
    RuleId.ACCESS_DENIED_BURST: access_denied_burst,
    RuleId.OFFLINE: offline,
    RuleId.CLOCK_SKEW: clock_skew,
}
