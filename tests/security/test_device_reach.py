"""What one compromised device can make the service do (docs/security.md): commands to itself
only, and a garage controller also to what its garage holds (its gates opened, the stations
inside cut off, for a fire). Whatever it sends: ids of other devices in the payload, any
mix of hazards, time passing after. Pure: topic and bytes through the real decoder into the
rules engine, as ingest does."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facilities.messages import Accepted
from facilities.mqtt.decode import Decoder
from facilities.mqtt.topics import Topics
from facilities.rules.engine import Engine
from facilities.rules.observation import message_cause
from facilities.site import Site, load_site
from facilities.verdicts import Action, ActionKind
from tests.support.paths import EXAMPLE_SITE

SITE = load_site(EXAMPLE_SITE)
TOPICS = Topics()
T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
OTHERS = ["cs-02", "cs-20", "g-hc5", "g-cq8", "north", "main", "facilities"]


def reach(site: Site, device: str) -> set[str]:
    """The devices a message of `device` may cause commands to."""
    garage = site.garages.get(device)
    return {device, *garage.stations} if garage is not None else {device}


# Fields naming other devices, which the protocol does not define: ignored, never followed.
forged = st.dictionaries(
    st.sampled_from(["station", "garage", "gate", "device", "id", "target", "subject"]),
    st.sampled_from(OTHERS),
    max_size=3,
)
temps = st.sampled_from([None, 21.0, 58.0, 75.0, 6553.5])


def station_messages(station: str) -> st.SearchStrategy[tuple[str, dict[str, Any] | str]]:
    ports = SITE.stations[station].ports
    reading = st.fixed_dictionaries(
        {
            "port": st.integers(1, ports),
            "state": st.sampled_from(["idle", "charging", "full", "fault", "disabled"]),
        },
        optional={
            "power_w": st.sampled_from([0.0, 12.0, 350.0, 1400.0, 9000.0]),
            "temp_c": temps,
            "station": st.sampled_from(OTHERS),
        },
    ).map(lambda r: {k: v for k, v in r.items() if v is not None})
    telemetry = st.builds(
        lambda temp, leak, smoke, readings, extra: (
            TOPICS.station(station, "telemetry"),
            {
                **extra,
                "temp_c": temp,
                "leakage_ma": leak,
                "smoke": smoke,
                "ports": list({r["port"]: r for r in readings}.values()),
            },
        ),
        temps,
        st.sampled_from([None, 0.0, 42.0]),
        st.sampled_from([None, False, True]),
        st.lists(reading, max_size=4),
        forged,
    )
    event = st.builds(
        lambda kind, port, extra: (
            TOPICS.station(station, "event"),
            {**extra, "type": kind, "port": port, "code": "E1"},
        ),
        st.sampled_from(["plug_in", "unplug", "fault", "fault_cleared", "charge_complete"]),
        st.integers(1, ports),
        forged,
    )
    availability = st.sampled_from(["online", "offline"]).map(
        lambda status: (TOPICS.station(station, "availability"), status)
    )
    return st.one_of(telemetry, event, availability)


def garage_messages(garage: str) -> st.SearchStrategy[tuple[str, dict[str, Any] | str]]:
    gates = SITE.garages[garage].gates
    telemetry = st.builds(
        lambda smoke, temp, occupancy, extra: (
            TOPICS.garage(garage, "telemetry"),
            {**extra, "smoke": smoke, "temp_c": temp, "occupancy": occupancy},
        ),
        st.sampled_from([None, False, True]),
        temps,
        st.sampled_from([None, 3, 10_000]),
        forged,
    )
    gate_event = st.builds(
        lambda gate, kind, extra: (
            TOPICS.gate(garage, gate, "event"),
            {**extra, "type": kind, "credential": "card:0042"},
        ),
        st.sampled_from([*gates, "main", "north"]),
        st.sampled_from(["entry", "exit", "denied", "opened", "closed", "forced_open"]),
        forged,
    )
    availability = st.sampled_from(["online", "offline"]).map(
        lambda status: (TOPICS.garage(garage, "availability"), status)
    )
    return st.one_of(telemetry, gate_event, availability)


@st.composite
def a_device_and_its_messages(draw: st.DrawFn) -> tuple[str, list[tuple[str, bytes]]]:
    device = draw(st.sampled_from([*SITE.stations, *SITE.garages]))
    one = station_messages(device) if device in SITE.stations else garage_messages(device)
    messages = []
    for seq, (topic, body) in enumerate(draw(st.lists(one, min_size=1, max_size=12)), 1):
        if isinstance(body, str):
            messages.append((topic, body.encode()))
            continue
        body = {k: v for k, v in body.items() if v is not None}
        stamped = {**body, "seq": seq, "ts": (T0 + timedelta(seconds=10 * seq)).timestamp()}
        messages.append((topic, json.dumps(stamped).encode()))
    return device, messages


def _targets(actions: list[Action]) -> set[str]:
    return {a.device for a in actions}


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(a_device_and_its_messages())
def test_no_message_of_a_device_commands_another_device(
    sent: tuple[str, list[tuple[str, bytes]]],
) -> None:
    device, messages = sent
    engine, decoder = Engine(SITE), Decoder(SITE, TOPICS)
    engine.listening_since = T0
    actions: list[Action] = []
    for n, (topic, raw) in enumerate(messages, 1):
        received_at = (T0 + timedelta(seconds=10 * n)).timestamp()
        message = decoder.decode(topic, raw, received_at)
        if not isinstance(message, Accepted):
            continue  # quarantined: reaches no rule
        assert message.route.device == device  # the topic's device, never the payload's
        observation = engine.observe(message)
        for transition in observation.transitions:
            actions += transition.actions
            assert transition.cause == message_cause(message)
            assert transition.cause.split()[1].split("/")[0] == device
        for resend in observation.resends:
            actions.append(resend.action)
            assert resend.cause == message_cause(message)
    # and what the timers make of that state, hours later (charge complete, no load, …)
    for hours in (0.1, 1, 3, 9):
        for transition in engine.tick(T0 + timedelta(hours=hours)):
            actions += transition.actions
    assert _targets(actions) <= reach(SITE, device)


def test_a_garage_smoke_report_opens_its_gates_and_cuts_the_stations_inside_only() -> None:
    """The most a garage controller can do, and it is written down: for a fire, life safety
    first (docs/security.md)."""
    engine, decoder = Engine(SITE), Decoder(SITE, TOPICS)
    body = {"seq": 1, "ts": T0.timestamp(), "smoke": True, "garage": "g-hc3", "station": "cs-20"}
    raw = json.dumps(body).encode()
    message = decoder.decode(TOPICS.garage("g-cq4", "telemetry"), raw, T0.timestamp())
    assert isinstance(message, Accepted)
    (transition,) = engine.observe(message).transitions
    assert (transition.alert.rule, transition.alert.subject) == ("smoke", "g-cq4")
    assert transition.alert.severity == "critical"
    assert set(transition.actions) == {
        Action(ActionKind.POWER_OFF_STATION, "cs-01"),
        Action(ActionKind.POWER_OFF_STATION, "cs-02"),
        Action(ActionKind.OPEN_GATE, "g-cq4", gate="north"),
        Action(ActionKind.OPEN_GATE, "g-cq4", gate="south"),
    }
    assert transition.cause == f"garage_telemetry g-cq4 seq 1 ts {T0.timestamp():.3f}"
