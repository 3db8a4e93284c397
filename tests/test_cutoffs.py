"""The desired state, pure: what is held, what is due again, what is listed (docs/rules.md,
"Desired state"); then through the engine, message by message."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from facilities.alerts import Change
from facilities.charging.payloads import PortState, StationTelemetry
from facilities.cutoffs import Cutoff, DesiredState, reachable
from facilities.garage.payloads import GateEvent, GateEventType
from facilities.messages import Accepted, MessageKind, Route
from facilities.rule_ids import RuleId
from facilities.rules.engine import Engine, Observation
from facilities.site import Site
from facilities.thresholds import Thresholds
from facilities.verdicts import Action, ActionKind
from facilities.wire import Availability
from tests.support.feed import Feed, at
from tests.support.payloads import reading, telemetry

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
PORT_OFF = Action(ActionKind.POWER_OFF_PORT, "cs-07", port=2)
STATION_OFF = Action(ActionKind.POWER_OFF_STATION, "cs-07")
GATE_OPEN = Action(ActionKind.OPEN_GATE, "g-cq4", gate="north")


def _held(action: Action, alert_id: str = "a1", ports: int = 3) -> DesiredState:
    desired = DesiredState()
    desired.hold(
        action, rule="smoke", alert_id=alert_id, subject=action.device, now=T0, ports=ports
    )
    return desired


# (what is held, what the device reports, what is due again, what stays listed as held)
REPORTS = [
    ("port off, reported disabled", PORT_OFF, (2, PortState.DISABLED), [], [True]),
    ("port off, reported idle (reboot)", PORT_OFF, (2, PortState.IDLE), [PORT_OFF], [True]),
    ("port off, reported charging", PORT_OFF, (2, PortState.CHARGING), [PORT_OFF], [True]),
    ("port off, reported full", PORT_OFF, (2, PortState.FULL), [PORT_OFF], [True]),
    ("port off, reported fault", PORT_OFF, (2, PortState.FAULT), [], [True]),
    ("port off, another port idle", PORT_OFF, (1, PortState.IDLE), [], [True]),
    (
        "station off, one port idle",
        STATION_OFF,
        (3, PortState.IDLE),
        [STATION_OFF],
        [True, True, True],
    ),
]


@pytest.mark.parametrize(
    ("action", "report", "due", "held"), [r[1:] for r in REPORTS], ids=[r[0] for r in REPORTS]
)
def test_a_held_cutoff_is_due_again_when_the_device_says_otherwise(
    action: Action, report: tuple[int, PortState], due: list[Action], held: list[bool]
) -> None:
    desired = _held(action)
    assert desired.port_reported("cs-07", *report) == due
    assert [c.held for c in desired] == held


def test_a_whole_station_is_one_record_per_port_and_one_command() -> None:
    desired = _held(STATION_OFF, ports=3)
    assert [(c.port, c.whole_station, c.action) for c in desired] == [
        (1, True, STATION_OFF),
        (2, True, STATION_OFF),
        (3, True, STATION_OFF),
    ]
    due = desired.port_reported("cs-07", 1, PortState.IDLE)
    due += desired.port_reported("cs-07", 2, PortState.IDLE)
    assert due == [STATION_OFF, STATION_OFF]  # the runtime sends it once (unique)


def test_a_cleared_alert_releases_its_cutoffs_and_the_port_is_listed_until_back_on() -> None:
    desired = _held(PORT_OFF)
    desired.release_alert("a1")
    (cutoff,) = desired
    assert (cutoff.held, cutoff.rule, cutoff.since) == (False, "smoke", T0)
    assert desired.port_reported("cs-07", 2, PortState.DISABLED) == []
    assert len(desired) == 1  # still off: still listed
    assert desired.port_reported("cs-07", 2, PortState.IDLE) == []  # back on: not due
    assert len(desired) == 0  # and gone


def test_a_person_switching_on_releases_it_until_firing_evidence_holds_it_again() -> None:
    desired = _held(PORT_OFF)
    desired.release_port("cs-07", 2)
    assert desired.holding("cs-07", 2) == []
    again = desired.hold(
        PORT_OFF, rule="smoke", alert_id="a1", subject="cs-07/2", now=T0 + timedelta(1), ports=3
    )
    assert again
    assert [c.since for c in desired.holding("cs-07", 2)] == [T0 + timedelta(1)]
    # held already: holding again changes nothing (the same evidence repeated)
    version = desired.version
    assert not desired.hold(
        PORT_OFF, rule="smoke", alert_id="a1", subject="cs-07/2", now=T0, ports=3
    )
    assert desired.version == version


def test_a_gate_is_held_open_while_its_alert_is_open_then_forgotten() -> None:
    desired = _held(GATE_OPEN)
    assert desired.gate_reported("g-cq4", "north", is_open=True) == []
    assert [c.confirmed for c in desired] == [True]
    assert desired.gate_reported("g-cq4", "north", is_open=False) == [GATE_OPEN]
    assert desired.gate_reported("g-cq4", "south", is_open=False) == []
    desired.release_alert("a1")
    assert list(desired) == []


def test_what_a_device_never_confirmed_is_due_when_it_is_back() -> None:
    desired = _held(PORT_OFF)
    desired.hold(STATION_OFF, rule="leakage", alert_id="a2", subject="cs-07", now=T0, ports=2)
    assert set(desired.unconfirmed("cs-07")) == {PORT_OFF, STATION_OFF}
    desired.confirm(STATION_OFF)
    assert desired.unconfirmed("cs-07") == [PORT_OFF]
    assert desired.unconfirmed("cs-08") == []


T = Thresholds()
LIMIT_S = T.telemetry_interval_s * T.offline_intervals
REACHABLE = [
    ("never heard from", None, None, None, True),
    ("its Will said offline", False, T0, None, False),
    ("heard just now", True, T0, None, True),
    (
        "silent as long as the offline rule allows",
        True,
        T0 - timedelta(seconds=LIMIT_S),
        None,
        False,
    ),
    (
        "silent because the service was down",
        True,
        T0 - timedelta(hours=2),
        T0 - timedelta(seconds=1),
        True,
    ),
]


@pytest.mark.parametrize(
    ("online", "last_seen", "listening_since", "expected"),
    [r[1:] for r in REACHABLE],
    ids=[r[0] for r in REACHABLE],
)
def test_a_device_known_offline_is_not_reachable(
    online: bool | None,
    last_seen: datetime | None,
    listening_since: datetime | None,
    expected: bool,
) -> None:
    assert reachable(online, last_seen, T, T0, listening_since=listening_since) is expected


def test_a_cutoff_names_the_command_that_asserts_it() -> None:
    gate = Cutoff("g-cq4", None, "north", False, "smoke", "a", "g-cq4", T0)
    assert gate.action == GATE_OPEN


# -- through the engine -------------------------------------------------------------------


def _observe(engine: Engine, kind: MessageKind, device: str, payload: Any, t: float) -> Observation:
    return engine.observe(Accepted(Route(kind, device), payload, at(t).timestamp()))


def _telemetry(engine: Engine, t: float, seq: int, *ports: dict[str, Any]) -> Observation:
    body = telemetry(seq, list(ports), ts=at(t).timestamp())
    payload = StationTelemetry.model_validate_json(json.dumps(body))
    return _observe(engine, MessageKind.STATION_TELEMETRY, "cs-07", payload, t)


def _port(state: str, temp_c: float) -> dict[str, Any]:
    return reading(2, state, temp_c=temp_c)


def test_engine_firing_evidence_for_an_open_alert_cuts_again(site: Site) -> None:
    engine = Engine(site)
    first = _telemetry(engine, 0, 1, _port("charging", 65.0))
    assert [t.actions for t in first.transitions] == [(PORT_OFF,)]
    assert first.resends == []  # the first cut rides on its transition
    assert _telemetry(engine, 1, 2, _port("disabled", 65.0)).resends == []
    assert engine.firing_cutoffs("cs-07", 2, at(1)) == [(RuleId.PORT_OVER_TEMPERATURE, "cs-07/2")]
    _telemetry(engine, 2, 3, _port("disabled", 58.0))  # in the band: no longer fires
    assert engine.firing_cutoffs("cs-07", 2, at(2)) == []
    engine.desired.release_port("cs-07", 2)  # a person switches it on
    assert _telemetry(engine, 3, 4, _port("idle", 58.0)).resends == []
    again = _telemetry(engine, 4, 5, _port("charging", 65.0))
    assert [(r.action, r.alert.rule) for r in again.resends] == [
        (PORT_OFF, "port_over_temperature")
    ]
    assert [t.change for t in again.transitions] == [Change.UPDATED]


def test_engine_a_station_back_online_gets_what_it_never_confirmed(site: Site) -> None:
    engine = Engine(site)
    feed = Feed(engine)
    feed.port("cs-01", 0, 1)
    feed.availability("cs-01", 1, "offline")
    assert not engine.reachable("cs-01", at(1))  # the runtime sends it nothing
    raised = feed.garage("g-cq4", 2, smoke=True)
    cs01_off = Action(ActionKind.POWER_OFF_STATION, "cs-01")
    assert cs01_off in raised[0].actions
    back = _observe(engine, MessageKind.STATION_AVAILABILITY, "cs-01", Availability.ONLINE, 3)
    assert [(r.action, r.alert.rule) for r in back.resends] == [(cs01_off, "smoke")]


def test_engine_a_gate_closing_during_smoke_is_opened_again(site: Site) -> None:
    engine = Engine(site)
    feed = Feed(engine)
    feed.garage("g-cq4", 0, smoke=True)
    feed.gate("g-cq4", "north", 1, "opened")
    closed = engine.observe(
        Accepted(
            Route(MessageKind.GATE_EVENT, "g-cq4", "north"),
            GateEvent(seq=99, ts=at(2).timestamp(), type=GateEventType.CLOSED),
            at(2).timestamp(),
        )
    )
    north = Action(ActionKind.OPEN_GATE, "g-cq4", gate="north")
    assert [r.action for r in closed.resends] == [north]
    feed.garage("g-cq4", 3, smoke=False)
    feed.tick(3 + site.thresholds.clear_after_s)  # the smoke alert clears
    assert ("smoke", "g-cq4") not in engine.alerts
    feed.gate("g-cq4", "north", 200, "opened")
    later = engine.observe(
        Accepted(
            Route(MessageKind.GATE_EVENT, "g-cq4", "north"),
            GateEvent(seq=100, ts=at(201).timestamp(), type=GateEventType.CLOSED),
            at(201).timestamp(),
        )
    )
    assert later.resends == []


def test_at_start_what_a_cleared_alert_held_is_released_and_unknown_devices_dropped() -> None:
    desired = _held(PORT_OFF, alert_id="open")
    desired.hold(GATE_OPEN, rule="smoke", alert_id="gone", subject="g-cq4", now=T0, ports=0)
    desired.hold(
        Action(ActionKind.POWER_OFF_PORT, "cs-99", port=1),
        rule="smoke",
        alert_id="open",
        subject="cs-99/1",
        now=T0,
        ports=0,
    )
    desired.hold(
        Action(ActionKind.POWER_OFF_PORT, "cs-07", port=3),
        rule="leakage",
        alert_id="gone",
        subject="cs-07",
        now=T0,
        ports=0,
    )
    desired.hold(
        Action(ActionKind.POWER_OFF_PORT, "cs-07", port=11),  # past the station's new count
        rule="smoke",
        alert_id="open",
        subject="cs-07/11",
        now=T0,
        ports=0,
    )
    desired.settle({"open"}, lambda subject: subject in {"cs-07/2", "cs-07/3", "g-cq4/north"})
    assert sorted((c.device, c.port, c.held) for c in desired) == [
        ("cs-07", 2, True),
        ("cs-07", 3, False),
    ]
