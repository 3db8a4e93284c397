"""Failover: a standby for a partition takes over within seconds of its owner's SIGKILL,
resuming the owner's broker session: nothing lost, nothing stored twice, cut-offs still sent,
no alert raised twice (docs/scaling.md, "Failover")."""

import time
from pathlib import Path

import httpx
import pytest

from facilities.site import Site
from tests.support.db import query
from tests.support.devices import Devices
from tests.support.payloads import reading, telemetry
from tests.support.poll import wait_for
from tests.support.processes import ServiceProcess, start_broker
from tests.test_crash_safety import Publisher

TOTAL = 20_000


def _stored(db: Path) -> int:
    return int(query(db, "SELECT count(*) FROM station_samples WHERE station = 'cs-01'")[0][0])


def _standing_by(port: int) -> bool:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    except httpx.HTTPError:
        return False
    return answer.status_code == 503 and answer.json()["error"] == "standby"


@pytest.mark.slow
async def test_a_standby_stops_at_once_and_leaves_the_owner_alone(
    tmp_path: Path, site: Site
) -> None:
    broker = start_broker(tmp_path / "broker", site)
    db = tmp_path / "facilities.db"
    owner, standby = (
        ServiceProcess(
            broker,
            db,
            client_id="facilities-p1",
            log=tmp_path / f"{name}.log",
            extra=("--partition", "1/2"),
        )
        for name in ("owner", "standby")
    )
    try:
        owner.start()
        standby.launch()
        await wait_for(lambda: _standing_by(standby.port), what="the standby answering")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{standby.port}") as http:
            metrics = (await http.get("/metrics")).text
            assert 'facilities_partition_standby{partition="1/2"} 1.0' in metrics
            assert (await http.get("/api/stations")).status_code == 503
        assert not db.with_name(f"{db.name}.partition-0-of-2.lock").exists()
        assert db.with_name(f"{db.name}.partition-1-of-2.lock").exists()
        code, seconds = standby.terminate()
        assert (code, seconds < 5) == (0, True), standby.log.read_text()[-2000:]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{owner.port}") as http:
            assert (await http.get("/healthz")).status_code == 200
            metrics = (await http.get("/metrics")).text
            assert 'facilities_partition_info{partition="1/2"} 1.0' in metrics
        code, _ = owner.terminate()
        assert code == 0
    finally:
        for instance in (owner, standby):
            if instance.process is not None and instance.process.poll() is None:
                instance.kill()
        broker.stop()


@pytest.mark.slow
async def test_the_standby_takes_over_after_a_sigkill_under_load(
    tmp_path: Path, site: Site, store_target: str
) -> None:
    broker = start_broker(tmp_path / "broker", site)
    db = store_target
    # one partition, two instances: the same broker user, so the same session
    owner, standby = (
        ServiceProcess(
            broker,
            db,
            client_id="facilities-p0",
            log=tmp_path / f"{name}.log",
            extra=("--partition", "0/1"),
        )
        for name in ("owner", "standby")
    )
    devices = Devices(broker)
    try:
        owner.start()
        standby.launch()
        await wait_for(lambda: _standing_by(standby.port), what="the standby answering")
        assert "standby for partition 0/1" in standby.log.read_text()

        cs02, cs03 = devices.station("cs-02"), devices.station("cs-03")
        cs03.publish_raw(telemetry(1, [reading(1, power_w=300.0)], leakage_ma=40.0))
        await wait_for(
            lambda: (
                query(db, "SELECT outcome FROM commands WHERE device = 'cs-03'") == [("acked",)]
            ),
            what="cs-03 cut by the owner",
        )
        publisher = Publisher(broker, TOTAL)
        publisher.start()
        await wait_for(lambda: _stored(db) >= 3_000, what="3,000 stored", timeout_s=60)

        owner.kill()
        killed_at, stored_at_kill = time.monotonic(), _stored(db)
        await wait_for(
            lambda: _stored(db) > stored_at_kill,
            what="the standby storing",
            timeout_s=10,
            interval_s=0.01,
        )
        first_stored_s = time.monotonic() - killed_at
        print(f"SIGKILL to the standby's first stored message: {first_stored_s:.2f} s")
        assert first_stored_s < 5.0

        # a hazard after the kill is cut by the new owner
        cs02.publish_raw(telemetry(1, [reading(2, power_w=300.0, temp_c=65.0)]))
        hazard_at = time.monotonic()
        # Behind the backlog the broker queued for the session while nobody owned it: the
        # new owner judges it once it has read what came before (docs/reliability.md). Not a
        # latency bound (it is measured, not asserted): 30 s for a loaded test machine.
        await wait_for(
            lambda: any(c.port == 2 for c in cs02.commands),
            what="cs-02/2 cut after the kill",
            timeout_s=30,
        )
        print(f"hazard after the kill to its power_off: {time.monotonic() - hazard_at:.2f} s")
        publisher.join(120)
        assert publisher.acked == TOTAL
        await wait_for(lambda: _stored(db) >= TOTAL, what="every message stored", timeout_s=60)
        assert query(
            db, "SELECT count(*), count(DISTINCT seq) FROM station_samples WHERE station = 'cs-01'"
        ) == [(TOTAL, TOTAL)]
        await wait_for(
            lambda: (
                query(db, "SELECT outcome FROM commands WHERE device = 'cs-02'") == [("acked",)]
            ),
            what="cs-02's ack stored",
        )
        # the alert raised before the kill is the same alert after it, cut once (cs-01's
        # timestamps are fixed in the past: its clock_skew alert is not this test's)
        sql = "SELECT rule, subject, state FROM alerts WHERE subject != 'cs-01' ORDER BY subject"
        assert query(db, sql) == [
            ("port_over_temperature", "cs-02/2", "active"),
            ("leakage", "cs-03", "active"),
        ]
        assert len(cs03.commands) == 1
        assert "took over partition 0/1" in standby.log.read_text()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{standby.port}") as http:
            assert (await http.get("/healthz")).status_code == 200
        code, _ = standby.terminate()
        assert code == 0, standby.log.read_text()[-2000:]
    finally:
        devices.close()
        for instance in (owner, standby):
            if instance.process is not None and instance.process.poll() is None:
                instance.kill()
        broker.stop()
