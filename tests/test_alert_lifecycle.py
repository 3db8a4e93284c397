"""The alert lifecycle, and properties every rule keeps on any valid state."""

import json
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from facilities.alerts import AlertState, Change
from facilities.charging.payloads import StationTelemetry
from facilities.charging.rules import CHARGING_RULES
from facilities.charging.state import StationLive, apply_telemetry
from facilities.garage.payloads import GarageTelemetry
from facilities.garage.rules import GARAGE_RULES
from facilities.garage.state import GarageLive
from facilities.garage.state import apply_telemetry as apply_garage
from facilities.rules.engine import Engine
from tests.support.feed import T0, Feed, at, changes


def test_one_open_alert_per_rule_and_subject_updated_by_new_evidence(site) -> None:
    feed = Feed(Engine(site))
    first = feed.station("cs-01", 0, leakage_ma=31.0)
    assert changes(first, "leakage") == ["raised:cs-01"]
    feed.station("cs-01", 10, leakage_ma=45.0)
    third = feed.station("cs-01", 20, leakage_ma=33.0)
    assert changes(third, "leakage") == ["updated:cs-01"]
    alert = feed.engine.alerts[("leakage", "cs-01")]
    assert (alert.count, alert.value, alert.peak) == (3, 33.0, 45.0)
    assert alert.raised_at == at(0)
    assert alert.updated_at == at(20)
    assert changes(feed.tick(30), "leakage") == []  # a tick is not new evidence


def test_acknowledge_then_clear_then_raise_anew(site) -> None:
    feed = Feed(Engine(site))
    feed.station("cs-02", 0, smoke=True)
    key = ("smoke", "cs-02")
    ack = feed.engine.acknowledge(key, "staff-wang", at(5))
    assert ack is not None
    assert ack.change is Change.ACKNOWLEDGED
    assert (ack.alert.state, ack.alert.acknowledged_by) == (AlertState.ACKNOWLEDGED, "staff-wang")
    assert feed.engine.acknowledge(key, "staff-li", at(6)) is None  # once
    feed.station("cs-02", 10, smoke=True)  # still smoking: stays acknowledged
    assert feed.engine.alerts[key].state is AlertState.ACKNOWLEDGED
    feed.station("cs-02", 20, smoke=False)
    cleared = [t for t in feed.tick(80) if t.alert.rule == "smoke"]
    assert [(t.change, t.alert.state, t.alert.cleared_at) for t in cleared] == [
        (Change.CLEARED, AlertState.CLEARED, at(80))
    ]
    assert key not in feed.engine.alerts
    again = feed.station("cs-02", 100, smoke=True)
    assert changes(again, "smoke") == ["raised:cs-02"]
    assert feed.engine.alerts[key].count == 1


def test_a_condition_that_returns_stops_the_clear_countdown(site) -> None:
    feed = Feed(Engine(site))
    feed.station("cs-03", 0, leakage_ma=30.0)
    feed.station("cs-03", 10, leakage_ma=5.0)  # clear countdown starts
    feed.station("cs-03", 50, leakage_ma=30.0)  # back: countdown reset
    feed.station("cs-03", 60, leakage_ma=5.0)
    assert changes(feed.tick(100), "leakage") == []
    assert changes(feed.tick(120), "leakage") == ["cleared:cs-03"]


finite = st.floats(min_value=-50, max_value=5000, allow_nan=False, allow_infinity=False)
non_negative = st.floats(min_value=0, max_value=5000, allow_nan=False, allow_infinity=False)
port_reading = st.fixed_dictionaries(
    {
        "port": st.integers(1, 12),
        "state": st.sampled_from(["idle", "charging", "full", "fault", "disabled"]),
    },
    optional={
        "power_w": non_negative,
        "energy_wh": non_negative,
        "temp_c": finite,
        "voltage_v": finite,
        "current_a": non_negative,
    },
)
station_message = st.fixed_dictionaries(
    {"seq": st.integers(0, 10**6), "ts": st.floats(1.0, 2e9)},
    optional={
        "temp_c": finite,
        "leakage_ma": non_negative,
        "smoke": st.booleans(),
        "ports": st.lists(port_reading, max_size=12, unique_by=lambda p: p["port"]),
    },
)
garage_message = st.fixed_dictionaries(
    {"seq": st.integers(0, 10**6), "ts": st.floats(1.0, 2e9)},
    optional={"occupancy": st.integers(0, 500), "temp_c": finite, "smoke": st.booleans()},
)


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(st.tuples(station_message, st.floats(0, 40_000)), min_size=1, max_size=8),
    later=st.floats(0, 40_000),
)
def test_charging_rules_never_raise_and_are_pure(site, messages, later) -> None:
    spec = site.stations["cs-01"]
    live = StationLive.new("cs-01", spec.ports)
    elapsed = 0.0
    for body, gap in messages:
        elapsed += gap
        apply_telemetry(
            live,
            StationTelemetry.model_validate_json(json.dumps(body)),
            T0 + timedelta(seconds=elapsed),
            spec.thresholds,
        )
    now = T0 + timedelta(seconds=elapsed + later)
    for rule in CHARGING_RULES.values():
        assert rule(live, spec, now) == rule(live, spec, now)


@settings(max_examples=100, deadline=None)
@given(messages=st.lists(garage_message, min_size=1, max_size=5), later=st.floats(0, 10_000))
def test_garage_rules_never_raise_and_are_pure(site, messages, later) -> None:
    spec = site.garages["g-cq4"]
    live = GarageLive.new("g-cq4", spec.gates)
    for n, body in enumerate(messages):
        apply_garage(
            live, GarageTelemetry.model_validate_json(json.dumps(body)), T0 + timedelta(seconds=n)
        )
    now = T0 + timedelta(seconds=len(messages) + later)
    for rule in GARAGE_RULES.values():
        assert rule(live, spec, now) == rule(live, spec, now)
