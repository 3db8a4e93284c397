"""Database growth per day at the district's load, and what retention keeps of it.

Run on demand: `.venv/bin/python bench/growth.py [--hours 24] [--site site.example.toml]`.

Feeds one day of the district (every station and garage of the site file, through the
simulators' own models: plug-ins, charging, gate traffic over a Shanghai day, telemetry every
10 s of device time) into `facilities run` with a database of its own, through a private broker
with the shipped config. Time is compressed: the devices' clocks (the messages' `ts`) step
through the day 10 s at a time, starting a day ago, and the messages are published as fast as
the service stores them (a few minutes instead of a day). The messages, their sizes and their
mix are a real day's; only their arrival is faster.

Then the service is stopped and retention's sweep runs on that database with its clock moved
past the telemetry retention (the service's own Retention, default policy): the day's raw
telemetry is summed up into 5-minute port buckets and deleted. Sizes are SQLite's own page
counts per table and index (dbstat), so free pages left by deletion are not counted.
"""

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import ingested, start_broker, start_service  # noqa: E402
from facilities.garage.payloads import GateEvent  # noqa: E402
from facilities.metrics import IngestMetrics  # noqa: E402
from facilities.mqtt.topics import Topics  # noqa: E402
from facilities.settings import Settings  # noqa: E402
from facilities.site import load_site  # noqa: E402
from facilities.store.db import Store  # noqa: E402
from facilities.store.retention import DAY_S, Policy, Retention  # noqa: E402
from simulators.fleet import TELEMETRY_INTERVAL_S  # noqa: E402
from simulators.world import SimClock, World  # noqa: E402

WINDOW = 100  # unacknowledged publishes at most (bench/publisher.py)
AHEAD = 5000  # messages published and not yet stored at most: the broker's queue stays short
MB = 1_000_000


class Feed:
    """One publisher as the broker's `bench` user, QoS 1, at most WINDOW in flight."""

    def __init__(self, port: int, password: str) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-growth-{time.time_ns()}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        self.client.username_pw_set("bench", password)
        self.client.max_inflight_messages_set(WINDOW)
        self.window = threading.BoundedSemaphore(WINDOW)
        self.client.on_publish = lambda *_a: self.window.release()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sent = 0
        self.bytes = 0

    def publish(self, topic: str, payload: str) -> None:
        self.window.acquire(timeout=60)
        self.client.publish(topic, payload, qos=1)
        self.sent += 1
        self.bytes += len(payload)

    def close(self) -> None:
        for _ in range(WINDOW):  # every publish acknowledged
            self.window.acquire(timeout=60)
        self.client.disconnect()
        self.client.loop_stop()


def feed_day(
    site_path: Path, feed: Feed, http_port: int, hours: float, start: float
) -> dict[str, int]:
    """The district's `hours` of device time from `start`, every device stepped each 10 s."""
    site = load_site(site_path)
    device_now = [start]
    world = World(site, clock=SimClock(wall=lambda: device_now[0]), rng=random.Random(14))
    topics = Topics()
    gate_seq: dict[tuple[str, str], int] = {}
    kinds = {"station_telemetry": 0, "station_events": 0, "garage_telemetry": 0, "gate_events": 0}
    steps = int(hours * 3600 / TELEMETRY_INTERVAL_S)
    for step in range(1, steps + 1):
        device_now[0] = start + step * TELEMETRY_INTERVAL_S
        for station in site.stations:
            events, telemetry = world.station_step(station)
            for event in events:
                feed.publish(
                    topics.station(station, "event"), event.model_dump_json(exclude_none=True)
                )
                kinds["station_events"] += 1
            feed.publish(
                topics.station(station, "telemetry"), telemetry.model_dump_json(exclude_none=True)
            )
            kinds["station_telemetry"] += 1
        for garage in site.garages:
            happenings, telemetry = world.garage_step(garage)
            for gate, kind, credential in happenings:
                seq = gate_seq.get((garage, gate), 0)
                gate_seq[(garage, gate)] = seq + 1
                event = GateEvent(seq=seq, ts=device_now[0], type=kind, credential=credential)
                feed.publish(
                    topics.gate(garage, gate, "event"), event.model_dump_json(exclude_none=True)
                )
                kinds["gate_events"] += 1
            feed.publish(
                topics.garage(garage, "telemetry"), telemetry.model_dump_json(exclude_none=True)
            )
            kinds["garage_telemetry"] += 1
        while feed.sent - ingested(http_port) > AHEAD:
            time.sleep(0.05)
        if step % 1000 == 0:
            print(f"  {step * TELEMETRY_INTERVAL_S / 3600:5.1f} h of device time sent", flush=True)
    return kinds


def sizes(db: Path) -> dict[str, int]:
    """Bytes of pages per table, its indexes counted with it (dbstat)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_schema").fetchall())
        found: dict[str, int] = {}
        for name, pages in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            found[table] = found.get(table, 0) + int(pages)
    return found


def rows(db: Path, tables: list[str]) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}  # noqa: S608


async def sum_up(db: Path, day_end: float) -> dict[str, float]:
    """The service's retention sweep on `db`, its clock past the raw telemetry's retention."""
    defaults = Settings()
    policy = Policy(
        quarantine_days=defaults.quarantine_retention_days,
        audit_days=defaults.audit_retention_days,
        telemetry_days=defaults.telemetry_retention_days,
        bucket_days=defaults.bucket_retention_days,
        event_days=defaults.event_retention_days,
    )
    now = day_end + (policy.telemetry_days + 1) * DAY_S
    store = Store(db)
    await store.open()
    try:
        retention = Retention(
            store.writer, policy, clock=lambda: now, metrics=IngestMetrics(CollectorRegistry())
        )
        started = time.perf_counter()
        swept = await retention.sweep()
        took = time.perf_counter() - started
    finally:
        await store.close()
    return {
        "seconds": took,
        "batches": swept.batches,
        "longest_batch_ms": swept.longest_batch_s * 1000,
        "port_rows_summed": swept.deleted.get("port_samples", 0),
        "buckets": swept.buckets,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0, help="hours of device time")
    parser.add_argument("--site", type=Path, default=ROOT / "site.example.toml")
    parser.add_argument("--workdir", type=Path, help="keep the database here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="growth-") as temp:
        workdir = args.workdir or Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        broker = start_broker(workdir, args.site)
        try:
            service = start_service(workdir, args.site, broker)
            feed = Feed(broker.port, broker.credentials["bench"])
            start = time.time() - DAY_S - 3600
            started = time.perf_counter()
            kinds = feed_day(args.site, feed, service.port, args.hours, start)
            feed.close()
            while ingested(service.port) < feed.sent:
                time.sleep(0.1)
            fed_s = time.perf_counter() - started
            service.terminate(timeout_s=60)
        finally:
            broker.stop()
        db = workdir / "f.db"
        raw = sizes(db)
        counted = rows(db, sorted(t for t in raw if not t.startswith("sqlite")))
        print(
            f"fed {feed.sent} messages ({feed.bytes / MB:.1f} MB of JSON) in {fed_s:.0f} s: {kinds}"
        )
        print(
            f"database file after {args.hours:g} h of device time: {db.stat().st_size / MB:.1f} MB"
        )
        print("tables with their indexes (MB) and rows:")
        for table, size in sorted(raw.items(), key=lambda kv: -kv[1]):
            if counted.get(table):
                print(f"  {table:24} {size / MB:8.2f} {counted[table]:10}")
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            alerts = conn.execute("SELECT rule, count(*) FROM alerts GROUP BY rule").fetchall()
        print(f"  alerts by rule: {dict(alerts)}")
        summed = asyncio.run(sum_up(db, start + args.hours * 3600))
        after = sizes(db)
        print(f"retention sweep of that day's raw telemetry: {json.dumps(summed)}")
        print(
            f"  port_buckets: {after.get('port_buckets', 0) / MB:.2f} MB,"
            f" {rows(db, ['port_buckets'])['port_buckets']} rows"
        )
        left = {t: s for t, s in after.items() if t in ("port_samples", "station_samples")}
        print(f"  raw telemetry left (MB): { {t: round(s / MB, 2) for t, s in left.items()} }")
    return 0


if __name__ == "__main__":
    sys.exit(main())
