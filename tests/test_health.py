"""/healthz tells the truth about safety: 503 with the reason while the rules' tick or writer
or the ingest writer is stuck, not only when the broker link or the database is down."""

import asyncio
import json
import sqlite3

import pytest

from facilities.rules.runner import TICK_LATE_S
from tests.api_support import Api
from tests.support.clock import MovableClock
from tests.support.devices import DeviceFactory
from tests.support.payloads import port, telemetry
from tests.support.poll import wait_for


async def _health_until(api: Api, *needed: str, timeout_s: float = 10.0) -> tuple[int, str]:
    """Ask /healthz until its answer names every reason in `needed` (each answer may take
    the 1 s database probe)."""

    async def naming_all() -> tuple[int, str] | None:
        response = await api.http.get("/healthz")
        detail = response.json().get("detail", "")
        return (response.status_code, detail) if all(r in detail for r in needed) else None

    return await wait_for(
        naming_all, timeout_s=timeout_s, what=f"/healthz to name {needed}", interval_s=0.05
    )


@pytest.mark.sqlite_only("the write lock of the database file")
async def test_healthz_is_503_while_the_writers_are_stuck_and_200_after(
    api: Api, clock: MovableClock, device: DeviceFactory
) -> None:
    """Another process holds the database's write lock: a hazard's alert cannot be stored
    and telemetry waits. Within the 5 s busy timeout (released before), /healthz names both."""
    db = api.service.settings.db
    assert (await api.http.get("/healthz")).status_code == 200
    station = device("cs-09")
    topic = "facilities/charging/cs-09/telemetry"
    # Taken in a thread: the service runs on this test's event loop, and a transaction it has
    # open must be able to finish (blocking the loop here held both sides until the timeout).
    locker = sqlite3.connect(db, isolation_level=None, timeout=30, check_same_thread=False)
    try:
        await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")
        hot = telemetry(1, [port(1, "charging", power_w=300.0, temp_c=72.0)])
        station.publish_raw(topic, json.dumps(hot))
        live, ingest = api.service.live, api.service.ingest
        await wait_for(
            lambda: (
                live.read(lambda e: ("port_over_temperature", "cs-09/1") in e.alerts)
                and ingest.waiting == 0
            ),
            what="the alert raised, the message taken into a batch (waiting for the lock)",
        )
        station.publish_raw(topic, json.dumps(telemetry(2, [port(1, "charging", temp_c=72.0)])))
        await wait_for(lambda: ingest.waiting == 1, what="a message waiting behind the batch")
        clock.advance(4)  # four seconds, for the heartbeats, without waiting them out
        status, detail = await _health_until(api, "rules writer stuck", "ingest writer stuck")
        assert status == 503
        assert "rules writer stuck" in detail
        assert "ingest writer stuck" in detail
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    await wait_for(
        lambda: ingest.waiting == 0 and ingest.committed >= 2, what="everything committed"
    )
    await wait_for(lambda: api.service.rules.stalls() == [], what="the rules writer done")
    assert (await api.http.get("/healthz")).status_code == 200


async def test_healthz_is_503_while_the_rules_tick_is_late(api: Api, clock: MovableClock) -> None:
    assert (await api.http.get("/healthz")).status_code == 200
    clock.advance(TICK_LATE_S + 1)  # time passes and no tick has run (none can until we yield)
    health = await api.service.health()
    assert not health.ok
    assert any(r.startswith("rules tick late") for r in health.reasons), health.reasons
    # the next tick (within a second) beats again
    await wait_for(lambda: api.service.rules.stalls() == [], what="a tick")
    assert (await api.http.get("/healthz")).status_code == 200
