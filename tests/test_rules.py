"""Every rule of docs/rules.md: fires at its threshold, not just below, clears with hysteresis."""

import pytest

from facilities.alerts import Change
from facilities.rules.engine import Engine
from facilities.verdicts import Action, ActionKind, Severity
from tests.support.feed import Feed, changes, raised
from tests.support.payloads import powers


@pytest.fixture
def feed(site) -> Feed:
    return Feed(Engine(site))


def port_off(station: str, port: int) -> Action:
    return Action(ActionKind.POWER_OFF_PORT, station, port=port)


def station_off(station: str) -> Action:
    return Action(ActionKind.POWER_OFF_STATION, station)


# -- numeric thresholds, one message at a time --------------------------------------------
# (rule, how to send a value, limit reached, just below, clearable value, held value, action)
NUMERIC = [
    (
        "port_over_temperature",
        lambda f, t, v: f.port("cs-02", t, 1, temp_c=v),
        60.0,
        59.9,
        53.9,
        55.0,
        port_off("cs-02", 1),
        "cs-02/1",
    ),
    (
        "leakage",
        lambda f, t, v: f.station("cs-02", t, leakage_ma=v),
        30.0,
        29.9,
        26.9,
        28.0,
        station_off("cs-02"),
        "cs-02",
    ),
]


@pytest.mark.parametrize(
    ("rule", "send", "limit", "below", "clear", "held", "action", "subject"),
    NUMERIC,
    ids=[n[0] for n in NUMERIC],
)
def test_numeric_rules(feed: Feed, rule, send, limit, below, clear, held, action, subject) -> None:
    assert raised(send(feed, 0, below), rule) == []  # just below: nothing
    fired = raised(send(feed, 1, limit), rule)  # at the threshold: at once, with its action
    assert [tr.alert.subject for tr in fired] == [subject]
    assert fired[0].alert.severity is Severity.CRITICAL
    assert fired[0].actions == (action,)
    send(feed, 2, held)  # between 90 % and the limit: held open however long
    assert changes(feed.tick(500), rule) == []
    send(feed, 600, clear)  # below 90 %: counts down clear_after_s (60 s)
    assert changes(feed.tick(659), rule) == []
    assert changes(feed.tick(660), rule) == [f"cleared:{subject}"]


def test_port_overload_needs_two_samples_in_a_row(feed: Feed) -> None:
    assert raised(feed.port("cs-03", 0, 1, power_w=1500.0), "port_overload") == []
    assert raised(feed.port("cs-03", 10, 1, power_w=800.0), "port_overload") == []
    assert raised(feed.port("cs-03", 20, 1, power_w=1000.0), "port_overload") == []
    assert raised(feed.port("cs-03", 30, 1, power_w=1000.0), "port_overload") == []  # not >
    assert raised(feed.port("cs-03", 40, 1, power_w=1000.1), "port_overload") == []
    fired = raised(feed.port("cs-03", 50, 1, power_w=1000.1), "port_overload")
    assert [tr.actions for tr in fired] == [(port_off("cs-03", 1),)]
    feed.port("cs-03", 60, 1, power_w=950.0)  # in the hysteresis band
    assert changes(feed.tick(300), "port_overload") == []
    feed.port("cs-03", 310, 1, power_w=0.0, state="disabled")
    feed.tick(311)
    assert changes(feed.tick(371), "port_overload") == ["cleared:cs-03/1"]


def test_station_overload_sheds_newest_sessions_first(feed: Feed) -> None:
    # ports start charging one after another: 1 first, 4 last
    for n, t in enumerate((0, 100, 200, 300), start=1):
        feed.port("cs-04", t, n, power_w=100.0)
    feed.station("cs-04", 400, ports=powers(2000, 2000, 2000, 1000))  # 7000: not over
    assert (
        raised(feed.station("cs-04", 410, ports=powers(2000, 2000, 2000, 1000)), "station_overload")
        == []
    )
    feed.station("cs-04", 420, ports=powers(2000, 2000, 2000, 1500))  # 7500, once
    fired = raised(
        feed.station("cs-04", 430, ports=powers(2000, 2000, 2000, 1500)), "station_overload"
    )
    # shed port 4 (newest, 1500 W: 6000 left, under 7000) and nothing else
    assert [tr.actions for tr in fired] == [(port_off("cs-04", 4),)]
    feed.station("cs-04", 440, ports=powers(2000, 2000, 2500, 2000))  # 8500
    assert fired[0].alert.value == 7500


def test_shedding_takes_as_many_ports_as_needed(feed: Feed) -> None:
    for n, t in enumerate((0, 100, 200, 300), start=1):
        feed.port("cs-05", t, n, power_w=100.0)
    feed.station("cs-05", 400, ports=powers(2000, 3000, 3000, 3000))
    fired = raised(
        feed.station("cs-05", 410, ports=powers(2000, 3000, 3000, 3000)), "station_overload"
    )
    assert fired[0].actions == (port_off("cs-05", 4), port_off("cs-05", 3))


def test_cabinet_over_temperature_warns_then_cuts(feed: Feed) -> None:
    assert raised(feed.station("cs-06", 0, temp_c=49.9), "over_temperature") == []
    warn = raised(feed.station("cs-06", 10, temp_c=50.0), "over_temperature")
    assert [(t.alert.severity, t.actions) for t in warn] == [(Severity.WARNING, ())]
    crit = feed.station("cs-06", 20, temp_c=60.0)
    escalated = [t for t in crit if t.change is Change.ESCALATED]
    assert [(t.alert.severity, t.actions) for t in escalated] == [
        (Severity.CRITICAL, (station_off("cs-06"),))
    ]


def test_cabinet_warning_threshold_per_station(feed: Feed) -> None:
    # site.example.toml: cs-20 warns from 55 (an open shed)
    assert raised(feed.station("cs-20", 0, temp_c=54.9), "over_temperature") == []
    assert len(raised(feed.station("cs-20", 10, temp_c=55.0), "over_temperature")) == 1


def test_temperature_rise_within_a_minute(feed: Feed) -> None:
    feed.port("cs-07", 0, 2, temp_c=30.0)
    assert raised(feed.port("cs-07", 60, 2, temp_c=39.9), "temperature_rise") == []
    fired = raised(feed.port("cs-07", 61, 2, temp_c=40.0), "temperature_rise")
    assert fired == []  # 30 °C was 61 s ago: out of the window; 39.9 → 40 is no rise
    fired = raised(feed.port("cs-07", 100, 2, temp_c=49.9), "temperature_rise")
    assert [(t.alert.subject, t.actions) for t in fired] == [("cs-07/2", (port_off("cs-07", 2),))]
    feed.station("cs-08", 0, temp_c=25.0)
    fired = raised(feed.station("cs-08", 30, temp_c=35.0), "temperature_rise")
    assert [t.actions for t in fired] == [(station_off("cs-08"),)]


def test_smoke_in_a_station(feed: Feed) -> None:
    assert raised(feed.station("cs-09", 0, smoke=False), "smoke") == []
    fired = raised(feed.station("cs-09", 1, smoke=True), "smoke")
    assert [t.actions for t in fired] == [(station_off("cs-09"),)]
    feed.station("cs-09", 2, smoke=False)
    assert changes(feed.tick(61), "smoke") == []
    assert changes(feed.tick(62), "smoke") == ["cleared:cs-09"]


def _charging(feed: Feed, station: str, t: float, **fields: object) -> None:
    feed.port(station, t, 1, **fields)


def test_charge_complete_after_two_hours_under_30_w(feed: Feed) -> None:
    feed.port("cs-10", 0, 1, power_w=300.0, energy_wh=500.0)
    feed.port("cs-10", 10, 1, power_w=29.9, energy_wh=600.0)
    assert raised(feed.tick(10 + 7199), "charge_complete") == []
    fired = raised(feed.tick(10 + 7200), "charge_complete")
    assert [(t.alert.severity, t.actions) for t in fired] == [
        (Severity.INFO, (port_off("cs-10", 1),))
    ]
    feed.port("cs-11", 0, 1, power_w=30.0, energy_wh=600.0)  # not under 30 W
    assert raised(feed.tick(8000), "charge_complete") == []


def test_no_load_after_five_minutes(feed: Feed) -> None:
    feed.port("cs-12", 0, 1, power_w=1.9, energy_wh=0.9)
    assert raised(feed.tick(299), "no_load") == []
    assert [t.alert.subject for t in raised(feed.tick(300), "no_load")] == ["cs-12/1"]
    feed.port("cs-13", 0, 1, power_w=2.0, energy_wh=0.0)
    feed.port("cs-13", 0, 2, power_w=0.0, energy_wh=1.0)
    assert [
        t.alert.subject
        for t in raised(feed.tick(400), "no_load")
        if t.alert.subject.startswith("cs-13")
    ] == []


def test_session_too_long_after_eight_hours(feed: Feed) -> None:
    feed.port("cs-14", 0, 1, power_w=300.0)
    assert raised(feed.tick(28800), "session_too_long") == []  # "more than 8 h"
    fired = raised(feed.tick(28801), "session_too_long")
    assert [(t.alert.severity, t.actions) for t in fired] == [
        (Severity.WARNING, (port_off("cs-14", 1),))
    ]


def test_a_charge_that_goes_on_through_a_port_fault_is_still_timed(feed: Feed) -> None:
    """A port fault ends the port's session (docs/rules.md, "Charging sessions"); a port that
    keeps reporting `charging` is in a new one from its next report, so `session_too_long`
    still cuts it (it never did: charging to charging is no change of state, and a session
    only started on one)."""
    feed.port("cs-14", 0, 1, power_w=300.0)
    feed.event("cs-14", 10, type="fault", port=1, code="relay_stuck")
    feed.event("cs-14", 20, type="fault_cleared", port=1)
    feed.port("cs-14", 30, 1, power_w=300.0)
    assert raised(feed.tick(28830), "session_too_long") == []
    fired = raised(feed.tick(28831), "session_too_long")
    assert [(t.alert.subject, t.actions) for t in fired] == [("cs-14/1", (port_off("cs-14", 1),))]


@pytest.mark.parametrize(
    ("code", "severity"),
    [
        ("relay_stuck", Severity.WARNING),
        ("over_current", Severity.CRITICAL),
        ("ground_fault", Severity.CRITICAL),
        ("over_temperature", Severity.CRITICAL),
    ],
)
def test_device_fault_until_cleared(feed: Feed, code: str, severity: Severity) -> None:
    fired = raised(feed.event("cs-15", 0, type="fault", port=3, code=code), "device_fault")
    assert [(t.alert.subject, t.alert.severity, t.actions) for t in fired] == [
        ("cs-15/3", severity, ())
    ]
    feed.event("cs-15", 5, type="fault_cleared", port=3)
    assert changes(feed.tick(65), "device_fault") == ["cleared:cs-15/3"]


def test_offline_by_will_or_by_silence(feed: Feed) -> None:
    assert raised(feed.availability("cs-16", 0, "offline"), "offline") != []
    feed.station("cs-17", 0)
    assert raised(feed.tick(29.9), "offline") == []
    assert [
        t.alert.subject for t in raised(feed.tick(30), "offline") if t.alert.subject == "cs-17"
    ] == ["cs-17"]


def test_clock_skew(feed: Feed) -> None:
    engine = feed.engine
    feed.station("cs-18", 0)
    engine.stations["cs-18"].clock_skew_s = 600.0
    assert raised(feed.tick(1), "clock_skew") == []
    engine.stations["cs-18"].clock_skew_s = -600.1
    assert [t.alert.severity for t in raised(feed.tick(2), "clock_skew")] == [Severity.INFO]


# -- garages ---------------------------------------------------------------------------------


def test_garage_smoke_cuts_its_stations_and_opens_its_gates(feed: Feed) -> None:
    fired = raised(feed.garage("g-cq4", 0, smoke=True), "smoke")
    assert [t.actions for t in fired] == [
        (
            station_off("cs-01"),
            station_off("cs-02"),
            Action(ActionKind.OPEN_GATE, "g-cq4", gate="north"),
            Action(ActionKind.OPEN_GATE, "g-cq4", gate="south"),
        )
    ]


def test_garage_smoke_without_gate_release(site) -> None:
    from dataclasses import replace

    garage = site.garages["g-hc3"]
    quiet = replace(garage, thresholds=garage.thresholds.merged({"fire_release_gates": False}))
    feed = Feed(Engine(replace(site, garages={**site.garages, "g-hc3": quiet})))
    fired = raised(feed.garage("g-hc3", 0, smoke=True), "smoke")
    assert fired[0].actions == (station_off("cs-07"), station_off("cs-08"))


def test_garage_temperature_and_capacity(feed: Feed) -> None:
    assert raised(feed.garage("g-cq8", 0, temp_c=49.9, occupancy=90), "over_temperature") == []
    assert raised(feed.garage("g-cq8", 1, temp_c=49.9, occupancy=90), "over_capacity") == []
    out = feed.garage("g-cq8", 2, temp_c=50.0, occupancy=91)
    assert [t.alert.severity for t in raised(out, "over_temperature")] == [Severity.WARNING]
    assert [t.alert.value for t in raised(out, "over_capacity")] == [91.0]


def test_gate_held_open(feed: Feed) -> None:
    feed.gate("g-hc4", "main", 0, "opened")
    assert raised(feed.tick(59), "gate_held_open") == []
    assert [t.alert.subject for t in raised(feed.tick(60), "gate_held_open")] == ["g-hc4/main"]
    feed.gate("g-hc4", "main", 70, "closed")
    feed.tick(71)
    assert changes(feed.tick(131), "gate_held_open") == ["cleared:g-hc4/main"]


def test_gate_forced(feed: Feed) -> None:
    fired = raised(feed.gate("g-hc5", "west", 0, "forced_open"), "gate_forced")
    assert [(t.alert.subject, t.alert.severity) for t in fired] == [
        ("g-hc5/west", Severity.CRITICAL)
    ]


def test_access_denied_burst(feed: Feed) -> None:
    for t in range(4):
        assert raised(feed.gate("g-hc5", "south", t * 10, "denied"), "access_denied_burst") == []
    assert raised(feed.gate("g-hc5", "south", 61, "denied"), "access_denied_burst") == []  # 0 s out
    fired = raised(feed.gate("g-hc5", "south", 62, "denied"), "access_denied_burst")
    assert [t.alert.value for t in fired] == [5.0]
