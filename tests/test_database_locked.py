"""A database that another connection keeps write-locked for longer than the busy timeout
(an operator's command, a backup, a slow disk) stops nothing: the cut-off goes out at once,
the service stays up, /healthz says the database is locked, and once the lock is given back
every message is stored exactly once (docs/reliability.md, "A database that cannot be
written")."""

import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from paho.mqtt.client import MQTTMessageInfo

from facilities.mosquitto import PrivateBroker
from facilities.store.db import BUSY_TIMEOUT_MS
from simulators.client import DeviceClient
from tests.api_support import Api
from tests.support import payloads
from tests.support.db import query
from tests.support.devices import DeviceFactory, Devices
from tests.support.poll import wait_for, wait_until
from tests.support.processes import ServiceProcess

# Within the broker's window of unacknowledged messages (RECEIVE_MAXIMUM, 2,000): nothing is
# acknowledged while the database is locked, and the broker sends nothing past it (a hazard
# behind a full window waits in the broker's queue: docs/reliability.md, "A database that
# cannot be written").
FILLER = 1500
# Past the busy timeout: every writer of the service fails at least once while it is held.
HOLD_S = BUSY_TIMEOUT_MS / 1000 + 2.0


def _count(db: Path, sql: str, *params: object) -> int:
    return int(query(db, sql, *params)[0][0])


@pytest.mark.sqlite_only(
    "the write lock of the database file (PostgreSQL: tests/test_postgres_store.py, tests/test_write_faults.py)"
)
@pytest.mark.slow
async def test_a_lock_held_past_the_busy_timeout_stops_neither_cut_offs_nor_ingest(
    api: Api, device: DeviceFactory, devices: Devices
) -> None:
    service = api.service
    db = service.settings.db
    commands: dict[str, tuple[float, bytes]] = {}
    devices.client("observer").subscribe(
        "facilities/charging/+/command",
        lambda topic, payload: commands.setdefault(
            topic.split("/")[2], (time.monotonic(), payload)
        ),
    )
    filler, first, second = device("cs-06"), device("cs-08"), device("cs-07")
    assert (await api.http.get("/healthz")).status_code == 200
    blocker = sqlite3.connect(db, isolation_level=None, timeout=30, check_same_thread=False)
    # on a thread of its own: the service shares this event loop (tests/test_ingest_window.py)
    await asyncio.to_thread(blocker.execute, "BEGIN IMMEDIATE")
    locked_at = time.monotonic()
    sent, cut_after = [], {}
    try:
        # a first hazard: its alert waits for the database
        sent.append(_overheat(first, "cs-08"))
        sent_at = time.monotonic()
        await wait_for(lambda: "cs-08" in commands, what="the first power_off")
        cut_after["cs-08"] = commands["cs-08"][0] - sent_at
        ts = time.time()
        sent += [
            filler.publish_raw(
                "facilities/charging/cs-06/telemetry",
                json.dumps(payloads.telemetry(seq, [payloads.port(1)], ts=ts + seq / 1000)),
            )
            for seq in range(1, FILLER + 1)
        ]
        # a second hazard behind 1,500 messages, while the first alert is still not stored
        await asyncio.sleep(max(0.0, locked_at + 1.0 - time.monotonic()))
        sent.append(_overheat(second, "cs-07"))
        sent_at = time.monotonic()
        await wait_for(lambda: "cs-07" in commands, what="power_off while the database is locked")
        cut_after["cs-07"] = commands["cs-07"][0] - sent_at
        print(f"power_off after the overheated reading: {cut_after}")
        assert all(json.loads(body)["action"] == "power_off" for _, body in commands.values())
        # the ingest writer and the rules' writer each fail once their busy timeout is out
        # (a loaded machine may first see the ingest writer stuck: it says so as well)
        health: list[httpx.Response] = []

        async def says_locked() -> bool:
            health.append(await api.http.get("/healthz"))
            return "database locked" in health[-1].json().get("detail", "")

        await wait_for(
            says_locked,
            timeout_s=BUSY_TIMEOUT_MS / 1000 + 10,
            interval_s=0.1,
            what="/healthz saying the database is locked",
        )
        assert health[-1].status_code == 503, health[-1].json()
        assert _count(db, "SELECT count(*) FROM station_samples") == 0
        await asyncio.sleep(max(0.0, locked_at + HOLD_S - time.monotonic()))
    finally:
        await asyncio.to_thread(blocker.rollback)
        blocker.close()
    released_at = time.monotonic()
    for info in sent:
        info.wait_for_publish(10)
    await wait_for(
        lambda: _count(db, "SELECT count(*) FROM station_samples") == FILLER + 2,
        what="every message stored",
        timeout_s=20,
    )
    print(f"all stored {time.monotonic() - released_at:.2f} s after the lock was given back")
    assert _count(db, "SELECT count(*) FROM station_samples WHERE station = 'cs-06'") == FILLER
    assert _count(db, "SELECT count(*) FROM station_samples WHERE station = 'cs-07'") == 1
    assert _count(db, "SELECT count(*) FROM station_samples WHERE station = 'cs-08'") == 1

    # the alerts and their cut-offs are stored once the database is back; each cut-off, which
    # the silent station never acknowledged, left the outbox with its outcome
    def settled() -> bool:
        alerts = "SELECT count(*) FROM alerts WHERE rule = 'port_over_temperature'"
        cuts = "SELECT count(*) FROM commands WHERE action = 'power_off' AND outcome = 'timeout'"
        return (
            _count(db, alerts) == 2
            and _count(db, cuts) == 2
            and _count(db, "SELECT count(*) FROM command_outbox") == 0
        )

    await wait_for(settled, what="the alerts and cut-offs stored, the outbox empty")
    for station in ("cs-07", "cs-08"):
        alerts = "SELECT count(*) FROM alerts WHERE rule = 'port_over_temperature' AND subject = ?"
        assert _count(db, alerts, f"{station}/2") == 1
        cuts = "SELECT count(*) FROM commands WHERE device = ? AND action = 'power_off'"
        assert _count(db, cuts, station) == 1
    await wait_for(_healthy(api), what="/healthz 200 again", timeout_s=10)


@pytest.mark.slow
def test_facilities_run_outlives_a_lock_held_past_the_busy_timeout(
    broker: PrivateBroker, device: DeviceFactory, tmp_path: Path
) -> None:
    """The process: before, the ingest writer's first failed write ended it (exit 1)."""
    db = tmp_path / "f.db"
    service = ServiceProcess(broker, db, client_id="locked", log=tmp_path / "service.log")
    service.start()
    try:
        station = device("cs-06")
        blocker = sqlite3.connect(db, isolation_level=None, timeout=30)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            ts = time.time()
            for seq in range(1, 11):
                telemetry = payloads.telemetry(seq, [payloads.port(1)], ts=ts + seq / 1000)
                station.publish_raw("facilities/charging/cs-06/telemetry", json.dumps(telemetry))
            health = f"http://127.0.0.1:{service.port}/healthz"

            def locked() -> bool:
                assert service.process is not None
                try:
                    return "database locked" in httpx.get(health, timeout=5).text
                except httpx.ConnectError:
                    exited = service.process.wait(30)
                    raise AssertionError(
                        f"exit {exited}: {service.log.read_text()[-600:]}"
                    ) from None

            wait_until(locked, what="/healthz to say so", timeout_s=HOLD_S, interval_s=0.2)
            time.sleep(max(0.0, HOLD_S - BUSY_TIMEOUT_MS / 1000))  # SQLite's timeout is real
            assert locked()
        finally:
            blocker.rollback()
            blocker.close()
        wait_until(lambda: _count(db, "SELECT count(*) FROM station_samples") == 10)
        wait_until(lambda: httpx.get(health, timeout=5).status_code == 200, what="/healthz 200")
        code, seconds = service.terminate()
        assert (code, seconds < 5) == (0, True), service.log.read_text()[-2000:]
        assert "ingest writer writes to the database again" in service.log.read_text()
    finally:
        if service.process is not None and service.process.poll() is None:
            service.kill()


def _overheat(station: DeviceClient, name: str) -> MQTTMessageInfo:
    overheated = payloads.port(2, "charging", power_w=300.0, temp_c=65.0)
    return station.publish_raw(
        f"facilities/charging/{name}/telemetry",
        json.dumps(payloads.telemetry(1, [overheated], ts=time.time())),
    )


def _healthy(api: Api) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await api.http.get("/healthz")).status_code == 200

    return check
