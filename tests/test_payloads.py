"""Wire models and the decoder: what devices may send, and why the rest is refused."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facilities.charging.payloads import PortState, StationEvent, StationTelemetry
from facilities.garage.payloads import GarageTelemetry
from facilities.messages import Accepted, MessageKind, Rejected, RejectReason
from facilities.mqtt.decode import Decoder
from facilities.mqtt.topics import Topics, _parse
from facilities.schemas import render_schemas
from facilities.store.db import open_db
from facilities.store.telemetry import BatchRows, write_batch
from facilities.wire import Availability
from tests.support.paths import ROOT

NOW = 1_764_400_000.0
TELEMETRY = "facilities/charging/cs-01/telemetry"
GOOD = {
    "seq": 1042,
    "ts": 1764400000.5,
    "temp_c": 31.5,
    "leakage_ma": 2.1,
    "smoke": False,
    "ports": [
        {
            "port": 1,
            "state": "charging",
            "voltage_v": 229.8,
            "current_a": 1.42,
            "power_w": 326.1,
            "energy_wh": 512.4,
            "temp_c": 33.0,
        },
        {
            "port": 2,
            "state": "idle",
            "voltage_v": 230.1,
            "current_a": 0.0,
            "power_w": 0.0,
            "energy_wh": 0.0,
            "temp_c": 29.0,
        },
    ],
}


@pytest.fixture
def decoder(site) -> Decoder:
    return Decoder(site, Topics())


def _decode(decoder: Decoder, topic: str, payload: bytes | str) -> Accepted | Rejected | None:
    raw = payload.encode() if isinstance(payload, str) else payload
    return decoder.decode(topic, raw, NOW)


def test_the_protocol_example_is_accepted(decoder: Decoder) -> None:
    result = _decode(decoder, TELEMETRY, json.dumps(GOOD))
    assert isinstance(result, Accepted)
    assert result.route.kind is MessageKind.STATION_TELEMETRY
    assert result.route.device == "cs-01"
    assert isinstance(result.payload, StationTelemetry)
    assert result.payload.ports[0].state is PortState.CHARGING
    assert result.payload.ports[0].power_w == 326.1
    assert result.extra_fields == 0


def _with(**changes: object) -> str:
    return json.dumps({**GOOD, **changes})


def _port(**changes: object) -> str:
    return json.dumps({**GOOD, "ports": [{**GOOD["ports"][0], **changes}]})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("{bad json", RejectReason.MALFORMED_JSON),
        (b"\xff\xfe\x00", RejectReason.MALFORMED_JSON),
        ("", RejectReason.MALFORMED_JSON),
        ("[1, 2]", RejectReason.SCHEMA_MISMATCH),
        (_with(seq="1042"), RejectReason.SCHEMA_MISMATCH),  # wrong type
        (_with(seq=1.5), RejectReason.SCHEMA_MISMATCH),
        (_with(seq=-1), RejectReason.SCHEMA_MISMATCH),
        (json.dumps({"ts": 1.0}), RejectReason.SCHEMA_MISMATCH),  # missing seq
        (_with(smoke="no"), RejectReason.SCHEMA_MISMATCH),
        (_port(state="charged"), RejectReason.SCHEMA_MISMATCH),
        (_port(power_w=-5.0), RejectReason.SCHEMA_MISMATCH),  # negative power
        (_port(energy_wh=-0.1), RejectReason.SCHEMA_MISMATCH),  # negative energy
        (_with(leakage_ma=-1), RejectReason.SCHEMA_MISMATCH),
        (_port(port=0), RejectReason.SCHEMA_MISMATCH),
        (_with(temp_c=float("nan")), RejectReason.NON_FINITE_NUMBER),  # json.dumps writes NaN
        (_port(power_w=float("inf")), RejectReason.NON_FINITE_NUMBER),
        ('{"seq": 1, "ts": 1e999}', RejectReason.NON_FINITE_NUMBER),
        (json.dumps({**GOOD, "pad": "x" * 70_000}), RejectReason.TOO_LARGE),
        # Bounded numbers (docs/protocol.md): past what the store or the site can hold.
        (_with(seq=2**63), RejectReason.SCHEMA_MISMATCH),
        (_with(seq=10**400), RejectReason.SCHEMA_MISMATCH),
        (_with(ts=1e300), RejectReason.SCHEMA_MISMATCH),
        (_with(ts=2.0**32 + 1), RejectReason.SCHEMA_MISMATCH),
        (_with(temp_c=-300.0), RejectReason.SCHEMA_MISMATCH),
        (_with(temp_c=1e5), RejectReason.SCHEMA_MISMATCH),
        (_with(leakage_ma=1e10), RejectReason.SCHEMA_MISMATCH),
        (_port(power_w=1e300), RejectReason.SCHEMA_MISMATCH),
        (_port(energy_wh=1e10), RejectReason.SCHEMA_MISMATCH),
        (_port(current_a=1e10), RejectReason.SCHEMA_MISMATCH),
        (_port(voltage_v=-1e10), RejectReason.SCHEMA_MISMATCH),
        (_port(port=65), RejectReason.SCHEMA_MISMATCH),  # past any station of the site file
        (_port(port=11), RejectReason.UNKNOWN_PORT),  # cs-01 has 10 ports
        # one port twice in one message: which reading is the port's?
        (
            json.dumps({**GOOD, "ports": [GOOD["ports"][0], GOOD["ports"][0]]}),  # type: ignore[index]
            RejectReason.SCHEMA_MISMATCH,
        ),
    ],
)
def test_bad_payloads_are_rejected_with_their_reason(
    decoder: Decoder, payload: str | bytes, reason: RejectReason
) -> None:
    result = _decode(decoder, TELEMETRY, payload)
    assert isinstance(result, Rejected)
    assert result.reason is reason
    assert result.detail


def test_a_topic_decodes_the_same_the_first_time_and_after(decoder: Decoder) -> None:
    """The decoder works out a device topic on its first message and keeps that: every
    later message on it is judged as the first was, good or bad, and an unknown device or
    topic is refused every time without anything kept for it (a device inventing topics
    cannot grow the service's memory)."""
    cases = [
        (TELEMETRY, json.dumps(GOOD), Accepted),
        (TELEMETRY, _port(port=11), RejectReason.UNKNOWN_PORT),
        (TELEMETRY, "not json", RejectReason.MALFORMED_JSON),
        ("facilities/charging/cs-01/availability", "online", Accepted),
        ("facilities/charging/cs-01/availability", "maybe", RejectReason.SCHEMA_MISMATCH),
        (
            "facilities/charging/cs-01/event",
            '{"seq": 1, "ts": 1.0, "type": "unplug", "port": 11}',
            RejectReason.UNKNOWN_PORT,
        ),
        ("facilities/charging/cs-01/command", "{}", None),
    ]
    for _ in range(3):
        for topic, payload, expected in cases:
            result = _decode(decoder, topic, payload)
            if expected is None:
                assert result is None, (topic, result)
            elif expected is Accepted:
                assert isinstance(result, Accepted), (topic, result)
            else:
                assert isinstance(result, Rejected) and result.reason is expected, (topic, result)
    for n in range(500):
        unknown = _decode(decoder, f"facilities/charging/cs-x{n}/telemetry", json.dumps(GOOD))
        assert isinstance(unknown, Rejected) and unknown.reason is RejectReason.UNKNOWN_DEVICE
        bogus = _decode(decoder, f"elsewhere/{n}", "{}")
        assert isinstance(bogus, Rejected) and bogus.reason is RejectReason.UNKNOWN_TOPIC
    assert decoder.topics_known == 3  # cs-01's telemetry, availability and event


def test_a_topic_too_long_to_be_a_device_s_is_refused_and_not_kept(decoder: Decoder) -> None:
    """The longest device topic is a gate's command ack with two 32-character ids: it is
    still parsed; longer ones are refused without being kept with the parsed topics (5,000
    of 65,000 characters held ~250 MB there)."""
    longest = "facilities/garage/" + "g" * 32 + "/gate/" + "n" * 32 + "/command/ack"
    assert Topics().parse(longest) is not None
    kept = _parse.cache_info().currsize
    for n in range(50):
        result = _decode(decoder, f"facilities/charging/cs-01/{n}{'x' * 60_000}", "{}")
        assert isinstance(result, Rejected) and result.reason is RejectReason.UNKNOWN_TOPIC
    assert _parse.cache_info().currsize == kept


def test_a_port_listed_twice_is_refused_before_a_port_past_the_count(decoder: Decoder) -> None:
    """Both are wrong; the duplicate is the schema's rule and is told first, as it was when
    the model checked it."""
    reading = GOOD["ports"][0]  # type: ignore[index]
    twice = {**GOOD, "ports": [reading, reading, {**reading, "port": 11}]}
    result = _decode(decoder, TELEMETRY, json.dumps(twice))
    assert isinstance(result, Rejected)
    assert result.reason is RejectReason.SCHEMA_MISMATCH
    assert result.detail == "ports: a port is listed more than once"


def test_the_largest_values_in_range_are_accepted(decoder: Decoder) -> None:
    """The bounds refuse nonsense, not a broken sensor's saturated reading: those still act."""
    payload = _with(seq=2**63 - 1, ts=2.0**32, temp_c=6553.5, leakage_ma=1e9)
    ports = [{**GOOD["ports"][0], "port": 10, "temp_c": -273.15, "power_w": 1e9}]  # type: ignore[dict-item]
    result = _decode(decoder, TELEMETRY, json.dumps({**json.loads(payload), "ports": ports}))
    assert isinstance(result, Accepted)
    occupancy = '{"seq": 1, "ts": 1.0, "occupancy": 1000000}'
    assert isinstance(_decode(decoder, "facilities/garage/g-cq4/telemetry", occupancy), Accepted)
    event = '{"seq": 1, "ts": 1.0, "type": "plug_in", "port": 11}'
    rejected = _decode(decoder, "facilities/charging/cs-01/event", event)
    assert isinstance(rejected, Rejected)
    assert rejected.reason is RejectReason.UNKNOWN_PORT
    assert rejected.detail == "port 11: cs-01 has 10 ports"


# Small values (so that messages are accepted too), the edges, and anything at all.
_INTS = (
    st.integers(min_value=-2, max_value=12)
    | st.sampled_from([2**63 - 1, 2**63, 64, 65, 1_000_000, 1_000_001])
    | st.integers(min_value=-(2**70), max_value=2**70)
)
_FLOATS = (
    st.floats(min_value=-300, max_value=2e9)
    | st.sampled_from([2.0**32, 2.0**32 + 1, 1e9, 1e9 + 1, -273.15, 1e4])
    | st.floats(allow_nan=False, allow_infinity=False)
)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(
    seq=_INTS,
    ts=_FLOATS,
    port=_INTS,
    numbers=st.lists(_FLOATS, min_size=6, max_size=6),
    occupancy=_INTS,
)
def test_whatever_is_accepted_can_be_stored(
    site, tmp_path_factory, seq: int, ts: float, port: int, numbers: list[float], occupancy: int
) -> None:
    """The bounds are the store's: a message the decoder accepts never fails in SQLite, and
    its device time is a date (the API shows it as one)."""
    volts, amps, watts, energy, temp, leakage = numbers
    reading = {"port": port, "state": "charging", "voltage_v": volts, "current_a": amps}
    reading |= {"power_w": watts, "energy_wh": energy, "temp_c": temp}
    messages = [
        (TELEMETRY, {"seq": seq, "ts": ts, "leakage_ma": leakage, "ports": [reading]}),
        ("facilities/charging/cs-01/event", {"seq": seq, "ts": ts, "type": "fault", "port": port}),
        ("facilities/garage/g-cq4/telemetry", {"seq": seq, "ts": ts, "occupancy": occupancy}),
    ]
    decoder = Decoder(site, Topics())
    accepted = []
    for topic, payload in messages:
        result = decoder.decode(topic, json.dumps(payload).encode(), NOW)
        assert isinstance(result, Accepted | Rejected)
        if isinstance(result, Accepted):
            accepted.append(result)
            assert isinstance(result.payload, StationTelemetry | StationEvent | GarageTelemetry)
            datetime.fromtimestamp(result.payload.ts, UTC) + timedelta(days=365)
    rows = BatchRows()
    for message in accepted:
        rows.add(message)

    async def store() -> int:
        conn = await open_db(tmp_path_factory.mktemp("db") / "f.db")
        try:
            return await write_batch(conn, rows)
        finally:
            await conn.close()

    assert asyncio.run(store()) == len(accepted)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("facilities/charging/cs-99/telemetry", RejectReason.UNKNOWN_DEVICE),
        ("facilities/garage/g-zz/telemetry", RejectReason.UNKNOWN_DEVICE),
        ("facilities/garage/g-cq4/gate/west/event", RejectReason.UNKNOWN_DEVICE),  # no such gate
        ("facilities/charging/cs-01/status", RejectReason.UNKNOWN_TOPIC),
        ("facilities/charging/CS-01/telemetry", RejectReason.UNKNOWN_TOPIC),  # id pattern
        ("facilities/parking/p-1/telemetry", RejectReason.UNKNOWN_TOPIC),
        ("facilities/garage/g-cq4/gate/north/telemetry", RejectReason.UNKNOWN_TOPIC),
        ("other/charging/cs-01/telemetry", RejectReason.UNKNOWN_TOPIC),
    ],
)
def test_bad_topics_are_rejected(decoder: Decoder, topic: str, reason: RejectReason) -> None:
    result = _decode(decoder, topic, json.dumps(GOOD))
    assert isinstance(result, Rejected)
    assert result.reason is reason


def test_unknown_fields_are_ignored_and_counted(decoder: Decoder) -> None:
    payload = {**GOOD, "firmware": "2.1", "ports": [{**GOOD["ports"][0], "relay": "ok"}]}  # type: ignore[dict-item]
    result = _decode(decoder, TELEMETRY, json.dumps(payload))
    assert isinstance(result, Accepted)
    assert result.extra_fields == 2


def test_every_other_device_message(decoder: Decoder) -> None:
    cases = {
        "facilities/charging/cs-01/event": '{"seq": 78, "ts": 1764400200.0, "port": 3, '
        '"type": "fault", "code": "over_current"}',
        "facilities/charging/cs-01/command/ack": '{"id": "5b0f", "ok": false, "error": "jammed"}',
        "facilities/garage/g-hc3/telemetry": '{"seq": 1, "ts": 1764400300.0, "occupancy": 57, '
        '"temp_c": 24.0, "smoke": false}',
        "facilities/garage/g-hc3/gate/north/event": '{"seq": 9, "ts": 1764400300.2, '
        '"type": "entry", "credential": "card:04A1B2C3"}',
        "facilities/garage/g-hc3/gate/north/command/ack": '{"id": "5b0f", "ok": true}',
    }
    for topic, payload in cases.items():
        assert isinstance(_decode(decoder, topic, payload), Accepted), topic
    bad_credential = '{"seq": 9, "ts": 1.0, "type": "entry", "credential": "pin:1234"}'
    result = _decode(decoder, "facilities/garage/g-hc3/gate/north/event", bad_credential)
    assert isinstance(result, Rejected) and result.reason is RejectReason.SCHEMA_MISMATCH


def test_availability_is_plain_text(decoder: Decoder) -> None:
    online = _decode(decoder, "facilities/charging/cs-01/availability", "online")
    assert isinstance(online, Accepted) and online.payload is Availability.ONLINE
    bad = _decode(decoder, "facilities/garage/g-cq4/availability", '{"status": "online"}')
    assert isinstance(bad, Rejected) and bad.reason is RejectReason.SCHEMA_MISMATCH


def test_our_own_commands_heard_back_are_skipped(decoder: Decoder) -> None:
    command = '{"id": "x", "ts": 1.0, "action": "power_off", "port": 1}'
    assert _decode(decoder, "facilities/charging/cs-01/command", command) is None
    assert _decode(decoder, "facilities/garage/g-cq4/gate/north/command", command) is None


@settings(max_examples=300, deadline=None)
@given(
    topic=st.one_of(
        st.text(max_size=60),
        st.sampled_from(
            [
                TELEMETRY,
                "facilities/charging/cs-01/event",
                "facilities/garage/g-cq4/gate/north/event",
                "facilities/garage/g-cq4/telemetry",
            ]
        ),
    ),
    raw=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        ["seq", "ts", "ports", "port", "state", "type", "power_w", "smoke", "x"]
                    ),
                    children,
                    max_size=6,
                )
            ),
            max_leaves=12,
        ).map(lambda value: json.dumps(value).encode()),
    ),
)
def test_the_decoder_never_raises(site, topic: str, raw: bytes) -> None:
    result = Decoder(site, Topics()).decode(topic, raw, NOW)
    assert result is None or isinstance(result, Accepted | Rejected)


def test_json_schemas_in_docs_are_up_to_date() -> None:
    stale = []
    for name, text in render_schemas().items():
        path = ROOT / "docs" / "schemas" / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    assert not stale, f"run `make schemas`: {stale} out of date"
