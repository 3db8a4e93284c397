"""Ingest through a real Mosquitto into a real SQLite file."""

import itertools
import json
import time

import httpx
import pytest
from asgi_lifespan import LifespanManager

from facilities.api.app import create_app
from facilities.messages import RejectReason
from facilities.service import Service, run
from facilities.store.telemetry import QUARANTINE_PREFIX_BYTES
from facilities.wiring import build
from tests.support import payloads
from tests.support.db import query
from tests.support.devices import DeviceFactory
from tests.support.payloads import port
from tests.support.poll import wait_for


def telemetry(seq: int, *, ts: float | None = None, power_w: float = 300.0) -> str:
    ports = [
        port(
            1,
            "charging",
            voltage_v=230.0,
            current_a=power_w / 230,
            power_w=power_w,
            energy_wh=12.5,
            temp_c=31.0,
        ),
        port(2, voltage_v=230.0, current_a=0.0, power_w=0.0, energy_wh=0.0, temp_c=28.0),
    ]
    return json.dumps(
        payloads.telemetry(seq, ports, ts=ts, temp_c=30.0, leakage_ma=1.0, smoke=False)
    )


def counter(service: Service, name: str, labels: dict[str, str] | None = None) -> float:
    value = service.metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


async def test_telemetry_events_and_gates_are_stored(
    service: Service, device: DeviceFactory
) -> None:
    station = device("cs-01")
    garage = device("g-hc3")
    ts = time.time()
    station.publish_raw(
        "facilities/charging/cs-01/telemetry", telemetry(1, ts=ts)
    ).wait_for_publish(5)
    station.publish_raw(
        "facilities/charging/cs-01/event",
        json.dumps({"seq": 5, "ts": ts, "port": 3, "type": "fault", "code": "over_current"}),
    ).wait_for_publish(5)
    garage.publish_raw(
        "facilities/garage/g-hc3/telemetry",
        json.dumps({"seq": 2, "ts": ts, "occupancy": 57, "temp_c": 24.0, "smoke": False}),
    ).wait_for_publish(5)
    garage.publish_raw(
        "facilities/garage/g-hc3/gate/north/event",
        json.dumps({"seq": 9, "ts": ts, "type": "entry", "credential": "card:04A1B2C3"}),
    ).wait_for_publish(5)
    db = service.settings.db
    # (not a count of commits: retained availability left on the session broker by other
    # tests' devices is committed too)
    await wait_for(
        lambda: all(
            query(db, f"SELECT count(*) FROM {table}") == [(1,)]  # noqa: S608 (fixed names)
            for table in ("station_samples", "charging_events", "garage_samples", "gate_events")
        ),
        what="the 4 messages committed",
    )
    assert query(db, "SELECT station, seq, ts, temp_c, smoke FROM station_samples") == [
        ("cs-01", 1, ts, 30.0, 0)
    ]
    assert query(db, "SELECT port, state, power_w FROM port_samples ORDER BY port") == [
        (1, "charging", 300.0),
        (2, "idle", 0.0),
    ]
    assert query(db, "SELECT station, port, type, code FROM charging_events") == [
        ("cs-01", 3, "fault", "over_current")
    ]
    assert query(db, "SELECT garage, occupancy FROM garage_samples") == [("g-hc3", 57)]
    assert query(db, "SELECT garage, gate, type, credential FROM gate_events") == [
        ("g-hc3", "north", "entry", "card:04A1B2C3")
    ]
    # counted once the commit returns to ingest, which may be after another reader sees it
    kinds = ("station_telemetry", "station_event", "garage_telemetry", "gate_event")
    await wait_for(
        lambda: all(
            counter(service, "facilities_messages_ingested_total", {"kind": kind}) == 1
            for kind in kinds
        ),
        what="each kind counted",
    )
    gate = {"garage": "g-hc3", "gate": "north", "type": "entry"}
    assert counter(service, "facilities_gate_events_total", gate) == 1


async def test_a_redelivered_duplicate_is_stored_once(
    service: Service, device: DeviceFactory
) -> None:
    station = device("cs-02")
    payload = telemetry(7, ts=time.time())
    for _ in range(3):  # what a QoS 1 redelivery looks like: same seq, same ts
        station.publish_raw("facilities/charging/cs-02/telemetry", payload).wait_for_publish(5)
    station.publish_raw("facilities/charging/cs-02/telemetry", telemetry(8)).wait_for_publish(5)
    await wait_for(lambda: service.ingest.committed >= 4, what="4 messages")
    db = service.settings.db
    assert query(db, "SELECT seq FROM station_samples WHERE station = 'cs-02' ORDER BY seq") == [
        (7,),
        (8,),
    ]
    assert query(db, "SELECT count(*) FROM port_samples WHERE station = 'cs-02'") == [(4,)]
    assert counter(service, "facilities_messages_duplicate_total") == 2


async def test_a_reboot_restarting_seq_is_not_a_duplicate(
    service: Service, device: DeviceFactory
) -> None:
    station = device("cs-03")
    station.publish_raw("facilities/charging/cs-03/telemetry", telemetry(0, ts=1_764_400_000.0))
    station.publish_raw("facilities/charging/cs-03/telemetry", telemetry(0, ts=1_764_400_900.0))
    sql = "SELECT count(*) FROM station_samples WHERE station = 'cs-03'"
    # Wait for these two rows, not for any 2 messages: retained availability left on the
    # session's broker by earlier tests is delivered first at subscription.
    await wait_for(lambda: query(service.settings.db, sql) == [(2,)], what="2 cs-03 samples")


BAD_INPUT = [
    # (who publishes, topic, payload, reason)
    ("cs-04", "facilities/charging/cs-04/telemetry", b"{not json", RejectReason.MALFORMED_JSON),
    (
        "cs-04",
        "facilities/charging/cs-04/telemetry",
        b'{"seq": "1", "ts": 1.0}',
        RejectReason.SCHEMA_MISMATCH,
    ),
    (
        "cs-04",
        "facilities/charging/cs-04/telemetry",
        b'{"seq": 1, "ts": 1.0, "temp_c": NaN}',
        RejectReason.NON_FINITE_NUMBER,
    ),
    (
        "cs-04",
        "facilities/charging/cs-04/telemetry",
        json.dumps({"seq": 1, "ts": 1.0, "note": "x" * 70_000}).encode(),
        RejectReason.TOO_LARGE,
    ),
    # A device removed from the site file whose broker account was left in place:
    (
        "rogue",
        "facilities/charging/cs-99/telemetry",
        telemetry(1).encode(),
        RejectReason.UNKNOWN_DEVICE,
    ),
    ("rogue", "facilities/charging/cs-04/diagnostics", b"{}", RejectReason.UNKNOWN_TOPIC),
]


@pytest.mark.parametrize(
    ("user", "topic", "payload", "reason"), BAD_INPUT, ids=[c[3].value for c in BAD_INPUT]
)
async def test_bad_input_is_quarantined_and_the_rest_flows(
    service: Service,
    device: DeviceFactory,
    user: str,
    topic: str,
    payload: bytes,
    reason: RejectReason,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", logger="facilities.mqtt.ingest")
    good = device("cs-04")
    sender = good if user == "cs-04" else device(user)
    good.publish_raw("facilities/charging/cs-04/telemetry", telemetry(1)).wait_for_publish(5)
    sender.publish_raw(topic, payload).wait_for_publish(5)
    good.publish_raw("facilities/charging/cs-04/telemetry", telemetry(2)).wait_for_publish(5)
    await wait_for(lambda: service.ingest.committed >= 3, what="3 messages")

    db = service.settings.db
    stored = query(db, "SELECT seq FROM station_samples WHERE station = 'cs-04' ORDER BY seq")
    assert stored == [(1,), (2,)]
    quarantined = query(db, "SELECT topic, payload, reason, detail, size FROM quarantine")
    assert len(quarantined) == 1
    q_topic, q_payload, q_reason, q_detail, q_size = quarantined[0]
    assert (q_topic, q_reason) == (topic, reason.value)
    assert q_payload == payload[:QUARANTINE_PREFIX_BYTES]  # and the length of all of it
    assert q_size == len(payload)
    assert q_detail
    # by device too: the site's, or one label for every id the site file does not name
    unknown = reason in (RejectReason.UNKNOWN_DEVICE, RejectReason.UNKNOWN_TOPIC)
    labels = {"reason": reason.value, "device": "_unknown" if unknown else "cs-04"}
    assert counter(service, "facilities_messages_rejected_total", labels) == 1
    logged = [r.getMessage() for r in caplog.records if topic in r.getMessage()]
    assert len(logged) == 1  # logged once ...
    assert len(logged[0]) < 1000  # ... and truncated


async def test_unknown_fields_are_counted(service: Service, device: DeviceFactory) -> None:
    station = device("cs-05")
    payload = json.loads(telemetry(1))
    payload["firmware"] = "v2.3"
    payload["ports"][0]["socket"] = "type-a"  # a port's unknown fields count too
    station.publish_raw("facilities/charging/cs-05/telemetry", json.dumps(payload))
    await wait_for(lambda: service.ingest.committed >= 1, what="1 message")
    labels = {"kind": "station_telemetry"}
    assert counter(service, "facilities_unknown_fields_total", labels) == 2


async def test_availability_changes_are_recorded_once_each(
    service: Service, device: DeviceFactory
) -> None:
    station = device("cs-06", client_id="cs-06")
    topic = "facilities/charging/cs-06/availability"
    for status in ("online", "online", "offline", "online"):
        station.publish_raw(topic, status, retain=True).wait_for_publish(5)
    await wait_for(lambda: service.ingest.committed >= 4, what="4 messages")
    rows = query(
        service.settings.db,
        "SELECT status FROM availability_changes WHERE device = 'cs-06' ORDER BY id",
    )
    statuses = [row[0] for row in rows]
    assert statuses[-3:] == ["online", "offline", "online"]
    assert all(a != b for a, b in itertools.pairwise(statuses))  # changes only


@pytest.mark.slow
async def test_a_dead_device_is_recorded_offline_by_its_last_will(
    service: Service, broker, device: DeviceFactory
) -> None:
    from facilities.mqtt.session import BrokerUrl
    from simulators.client import DeviceClient

    topic = "facilities/garage/g-hc4/availability"
    dying = DeviceClient(
        BrokerUrl.parse(broker.url("g-hc4")), client_id="g-hc4", availability_topic=topic
    ).connect()
    await wait_for(lambda: _status(service, "g-hc4") == "online", what="online")
    dying._client._sock.close()  # the device loses power: no DISCONNECT, the Will fires
    await wait_for(lambda: _status(service, "g-hc4") == "offline", timeout_s=60, what="Will")
    dying._client.loop_stop()


def _status(service: Service, device: str) -> str | None:
    rows = query(
        service.settings.db,
        "SELECT status FROM availability_changes WHERE device = ? ORDER BY id DESC",
        device,
    )
    return str(rows[0][0]) if rows else None


async def test_the_service_publishes_its_own_retained_status(
    service: Service, device: DeviceFactory
) -> None:
    seen: list[bytes] = []
    observer = device("observer")
    observer.subscribe("facilities/service/status", lambda _t, payload: seen.append(payload))
    await wait_for(lambda: b"online" in seen, what="retained online status")


async def test_healthz_says_ok_when_subscribed(settings, site) -> None:
    service = build(settings, site)
    app = create_app(service.http)
    async with run(service), LifespanManager(app):
        await wait_for(lambda: service.link.subscribed, what="subscription")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
