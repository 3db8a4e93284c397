"""No single device message can stop ingest: QoS 0, numbers out of range, rows the store
refuses, redelivered bad input, a wall clock stepped back."""

import asyncio
import json
import sqlite3
import time
import uuid
from pathlib import Path

import httpx
import pytest

from facilities.metrics import IngestMetrics
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.decode import Decoder
from facilities.mqtt.ingest import Ingest
from facilities.mqtt.session import BrokerLink, BrokerUrl
from facilities.mqtt.topics import Topics
from facilities.service import run
from facilities.settings import Settings
from facilities.site import Site
from facilities.store.db import open_db
from facilities.store.sql import is_postgres
from facilities.wiring import build
from simulators.client import DeviceClient
from tests.support import payloads
from tests.support.clock import MovableClock
from tests.support.db import query, writing
from tests.support.devices import DeviceFactory
from tests.support.paths import EXAMPLE_SITE
from tests.support.payloads import reading
from tests.support.poll import wait_for
from tests.support.processes import ServiceProcess, start_broker


def telemetry(seq: int, *, port: int = 1, ts: float | None = None) -> str:
    hot = reading(port, power_w=300.0, temp_c=31.0)
    return json.dumps(payloads.telemetry(seq, [hot], ts=ts, temp_c=30.0))


def _seqs(db: str | Path, station: str) -> list[int]:
    rows = query(db, "SELECT seq FROM station_samples WHERE station = ? ORDER BY seq", station)
    return [int(str(row[0])) for row in rows]


def _quarantine(db: str | Path, topic: str) -> list[tuple[str, str]]:
    rows = query(db, "SELECT reason, detail FROM quarantine WHERE topic = ? ORDER BY id", topic)
    return [(str(reason), str(detail)) for reason, detail in rows]


def _alive(service: ServiceProcess) -> None:
    """Fail at once, with the log, when the service process has died."""
    assert service.process is not None
    code = service.process.poll()
    assert code is None, f"the service exited {code}: {service.log.read_text()[-2000:]}"


def _healthy(service: ServiceProcess) -> bool:
    assert service.process is not None
    if service.process.poll() is not None:
        return False
    return httpx.get(f"http://127.0.0.1:{service.port}/healthz", timeout=2).status_code == 200


def _metric(service: ServiceProcess, sample: str) -> float:
    """One sample of the process's /metrics, e.g. `name{label="value"}`; 0 when absent."""
    text = httpx.get(f"http://127.0.0.1:{service.port}/metrics", timeout=2).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


# -- point 1: QoS 0 --------------------------------------------------------------------------


@pytest.mark.slow
async def test_qos0_retained_online_and_telemetry_are_stored_without_reconnects(
    tmp_path: Path, site: Site
) -> None:
    """A retained QoS 0 `online` is delivered at every subscription: acknowledging it (packet
    id 0) is a protocol error for Mosquitto, which drops the connection, for ever."""
    broker = start_broker(tmp_path / "broker", site)
    settings = Settings(
        site=EXAMPLE_SITE,
        broker=broker.url(),
        db=tmp_path / "facilities.db",
        connect_timeout_s=5.0,
    )
    station = DeviceClient(BrokerUrl.parse(broker.url("cs-07")), client_id="cs-07").connect()
    try:
        topic = "facilities/charging/cs-07"
        station.publish_raw(f"{topic}/availability", "online", qos=0, retain=True)
        service = build(settings, site)
        async with run(service):
            await wait_for(lambda: service.link.subscribed, what="subscription")
            for seq in range(20):
                station.publish_raw(f"{topic}/telemetry", telemetry(seq), qos=0)
                await asyncio.sleep(0.1)  # spread over 2 s: each one a chance to be dropped
            db = settings.db
            await wait_for(lambda: len(_seqs(db, "cs-07")) == 20, what="20 QoS 0 samples")
            await asyncio.sleep(1.0)  # Mosquitto's disconnect for a bad PUBACK comes at once
            assert service.link.reconnects == 0
            assert service.link.connected
            statuses = query(db, "SELECT status FROM availability_changes WHERE device = 'cs-07'")
            assert statuses == [("online",)]
            assert query(db, "SELECT count(*) FROM quarantine") == [(0,)]
    finally:
        station.close()
        broker.stop()


# -- point 2: numbers out of range, ports beyond the station, rows the store refuses --------


@pytest.mark.slow
async def test_out_of_range_numbers_and_ports_are_quarantined_and_the_service_stays_up(
    tmp_path: Path, broker: PrivateBroker, device: DeviceFactory, store_target: str
) -> None:
    db = store_target
    service = ServiceProcess(
        broker, db, client_id=f"range-{uuid.uuid4().hex[:6]}", log=tmp_path / "svc.log"
    )
    topic = "facilities/charging/cs-08/telemetry"
    event_topic = "facilities/charging/cs-08/event"
    bad = {
        "seq past SQLite's INTEGER": telemetry(2**63),
        "ts past any datetime": telemetry(5, ts=1e300),
        "port past the schema": telemetry(6, port=65),
        "power past any supply": json.dumps(
            {"seq": 7, "ts": time.time(), "ports": [{"port": 1, "state": "idle", "power_w": 1e300}]}
        ),
        "port past the station's 10": telemetry(8, port=11),
        "event port past the station's 10": json.dumps(
            {"seq": 9, "ts": time.time(), "port": 11, "type": "plug_in"}
        ),
    }
    try:
        service.start()
        station = device("cs-08")
        station.publish_raw(topic, telemetry(1)).wait_for_publish(5)
        for name, payload in bad.items():
            where = event_topic if name.startswith("event") else topic
            station.publish_raw(where, payload).wait_for_publish(5)
        station.publish_raw(topic, telemetry(2)).wait_for_publish(5)

        await wait_for(
            lambda: _alive(service) or _seqs(db, "cs-08") == [1, 2],
            timeout_s=15,
            what="good samples",
        )
        await wait_for(
            lambda: len(_quarantine(db, topic) + _quarantine(db, event_topic)) == len(bad),
            timeout_s=15,
            what="bad ones quarantined",
        )
        assert _healthy(service), service.log.read_text()[-3000:]
        reasons = _quarantine(db, topic) + _quarantine(db, event_topic)
        assert [reason for reason, _ in reasons] == [
            "schema_mismatch",
            "schema_mismatch",
            "schema_mismatch",
            "schema_mismatch",
            "unknown_port",
            "unknown_port",
        ]
        assert all(detail for _, detail in reasons)
        assert "10 ports" in reasons[-1][1]
        assert query(db, "SELECT count(*) FROM port_samples WHERE port > 10") == [(0,)]
    finally:
        if service.process and service.process.poll() is None:
            service.kill()


@pytest.mark.slow
async def test_a_row_the_database_refuses_is_quarantined_and_the_rest_is_stored(
    tmp_path: Path, broker: PrivateBroker, device: DeviceFactory, store_target: str
) -> None:
    """Whatever the validation misses, the writer quarantines the one message it cannot
    store and keeps the batch around it. The store here refuses one sample for real, as a
    constraint would."""
    db = store_target
    await (await open_db(db)).close()  # migrated
    with writing(db) as conn:
        if is_postgres(db):  # a check that fails, as PostgreSQL's constraints do
            conn.execute(
                "CREATE FUNCTION refuse_13() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF NEW.seq = 13 THEN RAISE EXCEPTION 'seq 13 refused by the store'"
                " USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$"
            )
            conn.execute(
                "CREATE TRIGGER refuse_13 BEFORE INSERT ON station_samples"
                " FOR EACH ROW EXECUTE FUNCTION refuse_13()"
            )
        else:
            conn.execute(
                "CREATE TRIGGER refuse_13 BEFORE INSERT ON station_samples WHEN NEW.seq = 13"
                " BEGIN SELECT RAISE(ABORT, 'seq 13 refused by the store'); END;"
            )
    service = ServiceProcess(
        broker, db, client_id=f"refuse-{uuid.uuid4().hex[:6]}", log=tmp_path / "svc.log"
    )
    topic = "facilities/charging/cs-09/telemetry"
    try:
        service.start()
        station = device("cs-09")
        # One burst, so that the refused message shares its batch with others.
        infos = [station.publish_raw(topic, telemetry(seq)) for seq in range(10, 40)]
        for info in infos:
            info.wait_for_publish(5)
        expected = [seq for seq in range(10, 40) if seq != 13]
        await wait_for(
            lambda: _alive(service) or _seqs(db, "cs-09") == expected,
            timeout_s=15,
            what="29 samples",
        )
        await wait_for(lambda: bool(_quarantine(db, topic)), timeout_s=15, what="quarantine")
        assert _healthy(service), service.log.read_text()[-3000:]
        [(reason, detail)] = _quarantine(db, topic)
        assert reason == "store_failed"
        assert "seq 13 refused by the store" in detail
        # everything was acknowledged: nothing is redelivered to the next start
        code, _ = service.terminate()
        assert code == 0
        service.start()
        # A barrier: the broker hands a resumed session what it kept before anything published
        # since, so once this new sample is in, a redelivery would have come before it.
        station.publish_raw(topic, telemetry(100)).wait_for_publish(5)
        telemetry_ingested = 'facilities_messages_ingested_total{kind="station_telemetry"}'
        await wait_for(lambda: _metric(service, telemetry_ingested) >= 1, what="the barrier")
        assert _metric(service, telemetry_ingested) == 1
        store_failed = 'facilities_messages_rejected_total{device="cs-09",reason="store_failed"}'
        assert _metric(service, store_failed) == 0
    finally:
        if service.process and service.process.poll() is None:
            service.kill()


# -- point 10: quarantine stored once ---------------------------------------------------------


@pytest.mark.slow
async def test_bad_input_redelivered_after_a_kill_is_quarantined_once(
    tmp_path: Path, broker: PrivateBroker, device: DeviceFactory, store_target: str
) -> None:
    """A retained bad availability (`booting`) comes again at every start of the service;
    so does a QoS 1 message that was committed but not acknowledged when it was killed."""
    db = store_target
    service = ServiceProcess(
        broker, db, client_id=f"once-{uuid.uuid4().hex[:6]}", log=tmp_path / "svc.log"
    )
    availability = "facilities/charging/cs-10/availability"
    telemetry_topic = "facilities/charging/cs-10/telemetry"
    station = device("cs-10")
    station.publish_raw(availability, "booting", retain=True).wait_for_publish(5)
    try:
        service.start()
        await wait_for(lambda: len(_quarantine(db, availability)) == 1, what="quarantined")
        for _ in range(2):  # the same bytes twice: what a redelivery looks like
            station.publish_raw(telemetry_topic, b'{"seq": 1, "ts": -5}').wait_for_publish(5)
        rejected = 'facilities_messages_rejected_total{device="cs-10",reason="schema_mismatch"}'
        await wait_for(lambda: _metric(service, rejected) >= 3, what="3 rejected")
        service.kill()
        service.start()
        await wait_for(
            lambda: _metric(service, rejected) >= 1,
            what="the retained message delivered again",
        )
        # a barrier: what the broker kept for the session comes before a sample sent now
        station.publish_raw(telemetry_topic, telemetry(2)).wait_for_publish(5)
        await wait_for(lambda: _seqs(db, "cs-10") == [2], what="the barrier stored")
        assert _quarantine(db, availability) == [
            ("schema_mismatch", "availability must be `online` or `offline`")
        ]
        assert len(_quarantine(db, telemetry_topic)) == 1
    finally:
        if service.process and service.process.poll() is None:
            service.kill()
        station.publish_raw(availability, b"", retain=True).wait_for_publish(5)


# -- point 9 (ingest writer): linger on a monotonic clock ------------------------------------


class SteppedBackClock(MovableClock):
    """Unix time that an operator (or NTP) steps back 300 s just after the first reading."""

    def __init__(self) -> None:
        super().__init__()
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        if self.readings == 2:
            self.step_wall(-300.0)
        return super().__call__()


async def test_a_wall_clock_stepped_back_does_not_hold_commits_and_acks(
    tmp_path: Path, broker: PrivateBroker, site: Site, device: DeviceFactory
) -> None:
    conn = await open_db(tmp_path / "facilities.db")
    from prometheus_client import CollectorRegistry

    clock = SteppedBackClock()
    metrics = IngestMetrics(CollectorRegistry(), devices=site.stations)
    ingest = Ingest(conn, Decoder(site, Topics()), metrics=metrics, clock=clock)
    await ingest.start()
    client_id = f"stepped-{uuid.uuid4().hex[:6]}"

    def link_for(on_message: object) -> BrokerLink:
        return BrokerLink(
            BrokerUrl.parse(broker.service_url(client_id)),
            client_id=client_id,
            topics=Topics(),
            on_message=on_message,  # type: ignore[arg-type]
            # not `#`: retained availability left by other tests would be committed too
            subscriptions=["facilities/charging/cs-11/telemetry"],
        )

    def _stored(count: int) -> bool:
        sql = "SELECT count(*) FROM station_samples WHERE station = 'cs-11'"
        return query(tmp_path / "facilities.db", sql) == [(count,)] and ingest.waiting == 0

    link = link_for(ingest.on_message)
    await link.connect(timeout_s=5)
    writer = asyncio.create_task(ingest.run(link))
    try:
        await wait_for(lambda: link.subscribed, what="subscription")
        station = device("cs-11")
        for seq in (1, 2):
            sent = time.monotonic()
            topic = "facilities/charging/cs-11/telemetry"
            station.publish_raw(topic, telemetry(seq)).wait_for_publish(5)
            await wait_for(lambda n=seq: _stored(n), timeout_s=5, what="commit and ack")
            assert time.monotonic() - sent < 2.0
        # Stored with the wall clock as it reads, stepped back 300 s for the second message.
        db = tmp_path / "facilities.db"
        rows = query(db, "SELECT received_at FROM station_samples ORDER BY seq")
        first, second = (float(str(row[0])) for row in rows)
        assert 295 < first - second < 300.5
    finally:
        ingest.stop()
        await asyncio.wait_for(writer, 5)
        await link.close()
    # Acknowledged: the session gives nothing back to the next connection.
    redelivered: list[str] = []
    again = link_for(lambda topic, *_: redelivered.append(topic))
    await again.connect(timeout_s=5)
    await wait_for(lambda: again.subscribed, what="subscription")
    await asyncio.sleep(1.0)
    await again.close()
    await conn.close()
    assert redelivered == []
    with sqlite3.connect(tmp_path / "facilities.db") as raw:
        assert raw.execute("SELECT count(*) FROM station_samples").fetchone() == (2,)
