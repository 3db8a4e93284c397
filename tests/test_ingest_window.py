"""The service holds at most its receive window of unacknowledged messages, whatever the broker
sends: Mosquitto 2.0.11 (Debian 12) stops honouring an MQTT 5 client's Receive Maximum once the
client acknowledges, and a backlog then arrived all at once (docs/performance.md, "A window the
service keeps itself")."""

import json
import sqlite3
import time
from pathlib import Path

import pytest

from facilities.mqtt.ingest import WINDOW_WAIT_MAX_S
from facilities.mqtt.link_options import RECEIVE_MAXIMUM
from facilities.service import Service, run
from facilities.settings import Settings
from facilities.site import Site
from facilities.wiring import build
from tests.support import payloads
from tests.support.db import query
from tests.support.devices import DeviceFactory
from tests.support.poll import wait_for

# Four windows: with a broker that lets the window go, the service received ~3 of them
# before its second commit.
BACKLOG = 4 * RECEIVE_MAXIMUM


def _stored(db: Path) -> int:
    return int(query(db, "SELECT count(*) FROM station_samples WHERE station = 'cs-06'")[0][0])


async def test_a_backlog_is_taken_a_window_at_a_time(
    settings: Settings, site: Site, device: DeviceFactory
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
    # asserted: whether the window filled is timing, that it was never passed is not.
    print(f"most messages held unacknowledged at once: {held}; waited {waited} s for room")
    assert 0 < held <= RECEIVE_MAXIMUM


async def test_a_stalled_database_holds_the_broker_link_half_a_second_at_most(
    service: Service, device: DeviceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Paho's thread also runs the rules and writes the commands: a writer that cannot commit
    (another process holds the database's write lock) must not hold it for longer than
    WINDOW_WAIT_MAX_S."""
    station = device("cs-06")
    ts = time.time()
    blocker = sqlite3.connect(service.settings.db, isolation_level=None, timeout=10)
    blocker.execute("BEGIN IMMEDIATE")  # within the service's busy timeout (5 s)
    try:
        sent = [
            station.publish_raw(
                "facilities/charging/cs-06/telemetry",
                json.dumps(payloads.telemetry(seq, [payloads.port(1)], ts=ts + seq / 1000)),
            )
            for seq in range(1, RECEIVE_MAXIMUM + 11)
        ]
        await wait_for(lambda: "reading on past the window" in caplog.text, what="let go")
    finally:
        blocker.rollback()
        blocker.close()
    for info in sent:
        info.wait_for_publish(10)
    await wait_for(lambda: _stored(service.settings.db) == len(sent), what="all stored")
    waited = service.metrics.registry.get_sample_value(
        "facilities_ingest_window_wait_seconds_total"
    )
    # one wait of WINDOW_WAIT_MAX_S while the lock was held, then none until the commit
    assert waited is not None and WINDOW_WAIT_MAX_S <= waited < 2 * WINDOW_WAIT_MAX_S
