"""One table for every rule of docs/rules.md: just below its threshold nothing fires; at the
threshold it fires; once the condition is gone (below the hysteresis band for numeric
limits) the alert clears after clear_after_s (60 s), and not before."""

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from facilities.rules.engine import Engine
from tests.support.feed import Feed
from tests.support.payloads import powers

Step = Callable[[Feed, float], object]


@dataclass(frozen=True)
class Case:
    rule: str
    subject: str
    below: Step  # just under the threshold (on a fresh engine): nothing fires
    fire: Step  # at the threshold: fires by time `fire_at` (messages, or the clock)
    calm: Step  # the condition gone (numeric: under the hysteresis band)
    fire_at: float = 0.0  # when the rule has fired after `fire` (timers fire on the clock)


def port(station: str, n: int = 1, **fields: object) -> Step:
    return lambda f, t: f.port(station, t, n, **fields)


def station(name: str, **fields: object) -> Step:
    return lambda f, t: f.station(name, t, **fields)


def twice(step: Step) -> Step:
    def run(f: Feed, t: float) -> None:
        step(f, t)
        step(f, t + 1)

    return run


def then(*steps: Step) -> Step:
    def run(f: Feed, t: float) -> None:
        for i, step in enumerate(steps):
            step(f, t + i)

    return run


def garage(name: str, **fields: object) -> Step:
    return lambda f, t: f.garage(name, t, **fields)


def gate(name: str, gate_id: str, kind: str) -> Step:
    return lambda f, t: f.gate(name, gate_id, t, kind)


def denied(n: int) -> Step:
    def run(f: Feed, t: float) -> None:
        for i in range(n):
            f.gate("g-hc3", "east", t + i, "denied")

    return run


CASES = [
    Case(
        "port_overload",
        "cs-01/1",
        below=twice(port("cs-01", power_w=1000.0)),
        fire=twice(port("cs-01", power_w=1000.1)),
        calm=port("cs-01", power_w=899.0),
        fire_at=1,
    ),
    Case(
        "station_overload",
        "cs-02",
        below=twice(station("cs-02", ports=powers(3500, 3500))),
        fire=twice(station("cs-02", ports=powers(3500, 3500.1))),
        calm=station("cs-02", ports=powers(3000, 3000)),
        fire_at=1,
    ),
    Case(
        "port_over_temperature",
        "cs-03/1",
        below=port("cs-03", temp_c=59.9),
        fire=port("cs-03", temp_c=60.0),
        calm=port("cs-03", temp_c=53.9),
    ),
    Case(
        "over_temperature",
        "cs-04",
        below=station("cs-04", temp_c=49.9),
        fire=station("cs-04", temp_c=50.0),
        calm=station("cs-04", temp_c=44.9),
    ),
    Case(
        "temperature_rise",
        "cs-05/1",
        below=then(port("cs-05", temp_c=30.0), port("cs-05", temp_c=39.9)),
        fire=then(port("cs-05", temp_c=30.0), port("cs-05", temp_c=40.0)),
        calm=port("cs-05", temp_c=40.0),
        fire_at=1,
    ),
    Case(
        "leakage",
        "cs-06",
        below=station("cs-06", leakage_ma=29.9),
        fire=station("cs-06", leakage_ma=30.0),
        calm=station("cs-06", leakage_ma=26.9),
    ),
    Case(
        "smoke",
        "cs-07",
        below=station("cs-07", smoke=False),
        fire=station("cs-07", smoke=True),
        calm=station("cs-07", smoke=False),
    ),
    Case(
        "charge_complete",
        "cs-08/1",
        below=lambda f, t: f.port("cs-08", t + 0.1, 1, power_w=29.9, energy_wh=500.0),
        fire=then(port("cs-08", power_w=29.9, energy_wh=500.0)),
        calm=port("cs-08", power_w=300.0, energy_wh=501.0),
        fire_at=7200,
    ),
    Case(
        "no_load",
        "cs-09/1",
        below=lambda f, t: f.port("cs-09", t + 0.1, 1, power_w=1.9, energy_wh=0.9),
        fire=port("cs-09", power_w=1.9, energy_wh=0.9),
        calm=port("cs-09", power_w=200.0, energy_wh=5.0),
        fire_at=300,
    ),
    Case(
        "session_too_long",
        "cs-10/1",
        below=lambda f, t: f.port("cs-10", t + 0.5, 1, power_w=300.0),
        fire=port("cs-10", power_w=300.0),
        calm=port("cs-10", state="idle", power_w=0.0),
        fire_at=28800.5,
    ),
    Case(
        "device_fault",
        "cs-11/2",
        below=lambda f, t: f.event("cs-11", t, type="button", port=2),
        fire=lambda f, t: f.event("cs-11", t, type="fault", port=2, code="relay_stuck"),
        calm=lambda f, t: f.event("cs-11", t, type="fault_cleared", port=2),
    ),
    Case(
        "offline",
        "cs-12",
        below=lambda f, t: f.availability("cs-12", t, "online"),
        fire=lambda f, t: f.availability("cs-12", t, "offline"),
        calm=lambda f, t: f.availability("cs-12", t, "online"),
    ),
    Case(
        "clock_skew",
        "cs-13",
        below=lambda f, t: f.station("cs-13", t, ts_offset=600.0),
        fire=lambda f, t: f.station("cs-13", t, ts_offset=600.5),
        calm=lambda f, t: f.station("cs-13", t, ts_offset=0.0),
    ),
    Case(
        "smoke",
        "g-cq4",
        below=garage("g-cq4", smoke=False),
        fire=garage("g-cq4", smoke=True),
        calm=garage("g-cq4", smoke=False),
    ),
    Case(
        "over_temperature",
        "g-cq8",
        below=garage("g-cq8", temp_c=49.9),
        fire=garage("g-cq8", temp_c=50.0),
        calm=garage("g-cq8", temp_c=44.9),
    ),
    Case(
        "over_capacity",
        "g-hc4",
        below=garage("g-hc4", occupancy=80),
        fire=garage("g-hc4", occupancy=81),
        calm=garage("g-hc4", occupancy=71),
    ),
    Case(
        "gate_held_open",
        "g-hc5/west",
        below=lambda f, t: f.gate("g-hc5", "west", t + 0.1, "opened"),
        fire=gate("g-hc5", "west", "opened"),
        calm=gate("g-hc5", "west", "closed"),
        fire_at=60,
    ),
    Case(
        "gate_forced",
        "g-hc5/south",
        below=gate("g-hc5", "south", "opened"),
        fire=gate("g-hc5", "south", "forced_open"),
        calm=lambda f, t: None,
    ),
    Case(
        "access_denied_burst",
        "g-hc3/east",
        below=denied(4),
        fire=denied(5),
        calm=lambda f, t: None,
        fire_at=4,
    ),
]


def _fired(feed: Feed, case: Case, until: float) -> bool:
    feed.tick(until)
    return (case.rule, case.subject) in feed.engine.alerts


def _open_after_calm(feed: Feed, case: Case, t: float) -> bool:
    """The condition stays gone at `t` (re-sent: a silent device would go offline); is the
    alert still open after that message and the tick at `t`?"""
    case.calm(feed, t)
    feed.tick(t)
    return (case.rule, case.subject) in feed.engine.alerts


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule}:{c.subject}" for c in CASES])
def test_fires_at_its_threshold_not_below_and_clears_with_hysteresis(site, case: Case) -> None:
    below = Feed(Engine(site))
    case.below(below, 0)
    assert not _fired(below, case, case.fire_at), "fired just below its threshold"

    feed = Feed(Engine(site))
    case.fire(feed, 0)
    assert _fired(feed, case, case.fire_at), "did not fire at its threshold"

    calm_at = case.fire_at + 100  # the clear countdown (clear_after_s = 60) starts here
    assert _open_after_calm(feed, case, calm_at)
    assert _open_after_calm(feed, case, calm_at + 59), "cleared before clear_after_s"
    assert not _open_after_calm(feed, case, calm_at + 60), "did not clear"
