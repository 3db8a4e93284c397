"""The service holds at most its window of unacknowledged messages, whatever the broker sends:
Mosquitto 2.0.11 (Debian 12) stops honouring an MQTT 5 client's Receive Maximum once the
client acknowledges, and a backlog then arrived all at once (docs/performance.md, "A window the
service keeps itself"). And the window never holds the rules behind a database that cannot
commit."""

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from facilities.mqtt.ingest import CEILING, WINDOW, WINDOW_WAIT_MAX_S
from facilities.mqtt.link_options import RECEIVE_MAXIMUM
from facilities.service import Service, run
from facilities.settings import Settings
from facilities.site import Site
from facilities.wiring import build
from tests.support import payloads
from tests.support.db import query
from tests.support.devices import DeviceFactory, Devices
from tests.support.poll import wait_for

# Five broker windows: with a broker that lets the window go, the service received 6,491
# messages before it had committed 2,000 (on a quiet machine).
BACKLOG = 5 * RECEIVE_MAXIMUM


def _stored(db: Path) -> int:
    return int(query(db, "SELECT count(*) FROM station_samples WHERE station = 'cs-06'")[0][0])


async def test_a_backlog_is_taken_a_window_at_a_time(
    settings: Settings, site: Site, device: DeviceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    first = build(settings, site)
    async with run(first):  # the session exists: the broker queues for it from now on
        await wait_for(lambda: first.link.subscribed, what="subscription")
    station = device("cs-06")
    ts = time.time()
    sent = [
        station.publish_raw(
            "facilities/charging/cs-06/telemetry",
            json.dumps(payloads.telemetry(seq, [payloads.port(1)], ts=ts + seq / 1000)),
        )
        for seq in range(1, BACKLOG + 1)
    ]
    for info in sent:
        info.wait_for_publish(30)

    second = build(settings, site)
    async with run(second):
        await wait_for(lambda: _stored(settings.db) == BACKLOG, what="backlog", timeout_s=60)
        held = second.ingest.peak_in_hand
        waited = second.metrics.registry.get_sample_value(
            "facilities_ingest_window_wait_seconds_total"
        )
    # How far the broker overruns depends on how fast paho reads against the writer: 6,491
    # held before the window on a quiet machine, 445 with the machine busy. Printed, not
    # asserted: whether the window filled is timing, that it was never passed is not, unless
    # the writer took over WINDOW_WAIT_MAX_S to make room (a loaded machine, PostgreSQL):
    # then the window is let go, said in the log, and only the ceiling holds.
    print(f"most messages held unacknowledged at once: {held}; waited {waited} s for room")
    let_go = any("reading on past the window" in r.getMessage() for r in caplog.records)
    assert 0 < held <= (CEILING if let_go else WINDOW)
    if let_go:
        assert waited is not None and waited >= WINDOW_WAIT_MAX_S


@pytest.mark.sqlite_only("the write lock of the database file")
async def test_a_cut_off_is_sent_while_another_process_holds_the_database(
    service: Service, device: DeviceFactory, devices: Devices
) -> None:
    """The rules judge a message before it is stored: with the database's write lock held by
    another connection (within the service's busy timeout, 5 s), an overheated port behind
    1,500 ordinary messages is switched off at once, and everything is stored once the lock
    is given back."""
    commands: list[bytes] = []
    devices.client("observer").subscribe(
        "facilities/charging/cs-07/command", lambda _topic, payload: commands.append(payload)
    )
    filler, hot = device("cs-06"), device("cs-07")
    ts = time.time()
    blocker = sqlite3.connect(
        service.settings.db, isolation_level=None, timeout=10, check_same_thread=False
    )
    # on a thread of its own: the service shares this event loop, and a transaction of its
    # own may need the loop to commit before the lock is free
    await asyncio.to_thread(blocker.execute, "BEGIN IMMEDIATE")
    try:
        sent = [
            filler.publish_raw(
                "facilities/charging/cs-06/telemetry",
                json.dumps(payloads.telemetry(seq, [payloads.port(1)], ts=ts + seq / 1000)),
            )
            for seq in range(1, 1501)
        ]
        overheated = payloads.port(2, "charging", power_w=300.0, temp_c=65.0)
        hot.publish_raw(
            "facilities/charging/cs-07/telemetry",
            json.dumps(payloads.telemetry(1, [overheated], ts=time.time())),
        )
        await wait_for(lambda: commands, what="power_off while the database is locked")
        assert json.loads(commands[0])["action"] == "power_off"
        assert _stored(service.settings.db) == 0  # nothing was committed meanwhile
    finally:
        blocker.rollback()
        blocker.close()
    for info in sent:
        info.wait_for_publish(10)
    await wait_for(lambda: _stored(service.settings.db) == len(sent), what="all stored")
