"""Retention: what the service stores is deleted after a while, in short batches; telemetry is
summed up per port and 5 minutes first, so that charts keep their history."""

# What is kept how long: docs/operations.md, "Retention". Quarantine and the API's request
# audit go by the server's clock (their rows' own times). Telemetry and device events expire
# when both their device time (`ts`, what history is read by) and the time they were received
# are past the cut-off: a device whose clock runs behind (none yet after a reboot, a flat
# battery) has its rows kept as long as any other's (a restart replays them, and the duplicate
# check needs them); a row whose device time runs more than AHEAD_S ahead of the server's goes
# by the time it was received alone, so that a device with a wrong clock cannot keep rows for
# ever. Alerts, commands and charging sessions
# are the district's record and are kept; they grow with what happens, a few rows a day.

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field

from facilities.metrics import IngestMetrics
from facilities.store import partitions
from facilities.store.db import SharedWriter
from facilities.store.sql import Connection
from facilities.write_faults import database_fault

log = logging.getLogger(__name__)

DAY_S = 86400.0
# Rows deleted per transaction: at most 11 ms each here (43 batches for 10,000 old rows of
# each table, tests/security/test_quarantine_bounds.py), so the write lock is never held long.
BATCH_ROWS = 500
# Pause between two batches, so that a batch of messages waiting for the write lock is
# committed between two of ours rather than after the whole backlog. The ingest writer waits
# in SQLite's busy handler, which sleeps up to 100 ms between two tries once it has waited
# ~0.3 s, so a pause longer than its longest sleep is one it cannot sleep through. (In whole
# test runs ingest's commits still came up to ~1.5 s apart during a large first sweep, with
# 50 ms pauses and with these; alone, well under 1 s: tests/test_retention.py. Not explained.)
PAUSE_S = 0.12
# A sweep this often: rows are at most this much past their retention when deleted.
EVERY_S = 600.0
# Telemetry is summed up per port and this much device time (migration 012, port_buckets).
BUCKET_S = 300.0
# At most this many buckets of a station are summed up in one transaction (a station silent
# for days has few rows in many buckets).
MAX_WINDOW_BUCKETS = 288
# Device time this far ahead of the server's is a wrong clock: such rows expire by the time
# they were received (a clock a few seconds ahead expires by its device time a day late).
AHEAD_S = DAY_S


@dataclass(frozen=True, slots=True)
class Policy:
    """How long each kind of row is kept, in days."""

    quarantine_days: float
    audit_days: float
    telemetry_days: float
    bucket_days: float
    event_days: float

    def cutoffs(self, now: float) -> dict[str, tuple[str, float]]:
        """Rows the server timed: table → (its time column, delete rows older than this)."""
        quarantine = now - self.quarantine_days * DAY_S
        audit = now - self.audit_days * DAY_S
        return {
            "api_requests": ("at", audit),
            "auth_refusals": ("minute", audit),
            "quarantine": ("received_at", quarantine),
            "quarantine_over_quota": ("hour_start", quarantine),
        }

    def by_device(self, now: float) -> list[tuple["_DeviceRows", float]]:
        """Rows deleted device by device: (the table, delete rows older than this)."""
        telemetry = now - self.telemetry_days * DAY_S
        events = now - self.event_days * DAY_S
        buckets = now - self.bucket_days * DAY_S
        return [
            (_GARAGE_SAMPLES, telemetry),
            (_CHARGING_EVENTS, events),
            (_GATE_EVENTS, events),
            (_AVAILABILITY, events),
            (_PORT_BUCKETS, buckets),
        ]


@dataclass(frozen=True, slots=True)
class _DeviceRows:
    """A table whose rows are found device by device: `device` leads an index, followed by
    `time`; `keys` are a row's identity; `received` the server's time of the row, for rows
    whose `time` is a device's clock (None: `time` is the server's)."""

    table: str
    device: str
    time: str
    keys: str
    received: str | None


# table and column names below are constants, never input
_GARAGE_SAMPLES = _DeviceRows("garage_samples", "garage", "ts", "garage, ts, seq", "received_at")
_CHARGING_EVENTS = _DeviceRows(
    "charging_events", "station", "ts", "station, ts, seq", "received_at"
)
_GATE_EVENTS = _DeviceRows("gate_events", "garage", "ts", "garage, gate, ts, seq", "received_at")
_AVAILABILITY = _DeviceRows("availability_changes", "device", "received_at", "rowid", None)
_PORT_BUCKETS = _DeviceRows(
    "port_buckets", "station", "start", "station, start, port", "updated_at"
)


def _devices_sql(table: str, column: str) -> str:
    """The distinct values of an index's leading column, one index seek each (not a scan)."""
    return (
        f"WITH RECURSIVE d(x) AS (SELECT min({column}) FROM {table}"  # noqa: S608
        f" UNION ALL SELECT (SELECT min({column}) FROM {table} WHERE {column} > x)"
        " FROM d WHERE x IS NOT NULL) SELECT x FROM d WHERE x IS NOT NULL"
    )


# A station's port readings with device time in [lo, hi) (received before :received: all,
# or those of a clock running ahead) summed up per port and bucket, and added to what the
# bucket already holds. The last reading is the one with the largest (ts, seq).
_SUM_UP = (
    partitions.INTO_BUCKETS  # noqa: S608 (constants)
    + """
SELECT :station, bucket * :bucket_s, port, count(*), count(power_w), sum(power_w), max(power_w),
       last_ts, last_seq, last_state, :now
FROM (
    SELECT CAST(ts / :bucket_s AS INTEGER) AS bucket, port, power_w,
           last_value(ts) OVER w AS last_ts, last_value(seq) OVER w AS last_seq,
           last_value(state) OVER w AS last_state
    FROM port_samples
    WHERE station = :station AND ts >= :lo AND ts < :hi AND received_at < :received
    WINDOW w AS (PARTITION BY CAST(ts / :bucket_s AS INTEGER), port ORDER BY ts, seq
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
) AS readings
WHERE true
GROUP BY bucket, port, last_ts, last_seq, last_state  -- the last three: one per bucket and port
"""
    + partitions.ADDED_TO_BUCKETS
)
_RAW_RANGE = "WHERE station = :station AND ts >= :lo AND ts < :hi AND received_at < :received"
_DROP_PORTS = f"DELETE FROM port_samples {_RAW_RANGE}"  # noqa: S608 (constants)
_DROP_MESSAGES = f"DELETE FROM station_samples {_RAW_RANGE}"  # noqa: S608 (constants)


@dataclass(slots=True)
class Swept:
    """What one sweep deleted (tables with none left out), in how many batches."""

    deleted: dict[str, int] = field(default_factory=dict)
    buckets: int = 0  # port buckets written or added to
    batches: int = 0
    batch_rows: int = BATCH_ROWS
    longest_batch_s: float = 0.0


class Retention:
    """Deletes rows past their retention through the rules' writer, a short transaction at a
    time; the time comes from `clock` (Unix seconds), so tests move it instead of waiting."""

    def __init__(
        self,
        writer: SharedWriter,
        policy: Policy,
        *,
        clock: Callable[[], float],
        metrics: IngestMetrics,
        batch_rows: int = BATCH_ROWS,
        devices: Collection[str] | None = None,
    ) -> None:
        self._writer = writer
        # `--partition`: the devices whose rows this instance sweeps (None: every device)
        self._mine = devices
        self.policy = policy
        self._clock = clock
        self._metrics = metrics
        self._batch_rows = batch_rows
        self._sweeping = asyncio.Lock()
        self.sweeps = 0  # finished: the one at start, then one every EVERY_S (and asked-for)

    async def run(self) -> None:
        """Sweep at start and then every EVERY_S, until cancelled. A database that cannot be
        written now (locked, full) waits for the next sweep: what was deleted stays deleted."""
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                if not database_fault(exc):
                    raise
                log.warning("retention: sweep given up (%s): the next in %.0f s", exc, EVERY_S)
            await asyncio.sleep(EVERY_S)

    async def sweep(self) -> Swept:
        """Delete every row past its retention now, in batches of about `batch_rows`; one
        sweep at a time (the one at start may still run when another is asked for: each
        would delete part of the other's rows, and both would count short)."""
        async with self._sweeping:
            swept = await self._sweep()
            self.sweeps += 1
            return swept

    async def _sweep(self) -> Swept:
        swept = Swept(batch_rows=self._batch_rows)
        now = self._clock()
        for table, (column, before) in self.policy.cutoffs(now).items():
            # table and column names come from Policy, never from input
            sql = (
                f"DELETE FROM {table} WHERE rowid IN"  # noqa: S608
                f" (SELECT rowid FROM {table} WHERE {column} < ? LIMIT ?)"
            )
            await self._delete_all(swept, table, sql, (before,))
        if self._writer.postgres:
            await self._drop_partitions(swept, now)
        await self._sum_up_telemetry(swept, now)
        for rows, before in self.policy.by_device(now):
            for device in await self._devices(rows.table, rows.device):
                await self._delete_device_rows(swept, rows, device, before, now)
        if swept.deleted:
            log.debug(
                "retention: deleted %s, %d port buckets written, in %d batches",
                swept.deleted,
                swept.buckets,
                swept.batches,
            )
        return swept

    async def _drop_partitions(self, swept: Swept, now: float) -> None:
        """PostgreSQL: the days ahead made, expired days dropped whole (partitions.py); the
        row-by-row sweep after it finds only what a day's partition could not take."""
        await partitions.make_days(self._writer, now)
        dropped = await partitions.drop_expired(
            self._writer,
            now=now,
            telemetry_before=now - self.policy.telemetry_days * DAY_S,
            events_before=now - self.policy.event_days * DAY_S,
            bucket_s=BUCKET_S,
        )
        swept.buckets += dropped.buckets
        swept.batches += dropped.partitions
        for table, rows in dropped.rows.items():
            self._count(swept, table, rows)

    async def _delete_device_rows(
        self, swept: Swept, rows: _DeviceRows, device: str, before: float, now: float
    ) -> None:
        """One device's rows older than `before`, and those timed more than AHEAD_S ahead of
        `now` that were received (or last added to) before `before`."""
        select = f"SELECT {rows.keys} FROM {rows.table} WHERE {rows.device} = ?"  # noqa: S608
        delete = f"DELETE FROM {rows.table} WHERE ({rows.keys}) IN"  # noqa: S608
        if rows.received is None:
            past = f"{delete} ({select} AND {rows.time} < ? LIMIT ?)"
            await self._delete_all(swept, rows.table, past, (device, before))
        else:
            past = f"{delete} ({select} AND {rows.time} < ? AND {rows.received} < ? LIMIT ?)"
            await self._delete_all(swept, rows.table, past, (device, before, before))
        if rows.received is not None:
            ahead = f"{delete} ({select} AND {rows.time} > ? AND {rows.received} < ? LIMIT ?)"
            await self._delete_all(swept, rows.table, ahead, (device, now + AHEAD_S, before))

    async def _delete_all(
        self, swept: Swept, table: str, sql: str, params: tuple[object, ...]
    ) -> None:
        """Run `sql` (a DELETE of at most its last parameter's rows) until it deletes fewer."""
        while True:
            async with self._batch(swept) as conn:
                cursor = await conn.execute(sql, (*params, self._batch_rows))
                deleted = cursor.rowcount
            self._count(swept, table, deleted)
            if deleted < self._batch_rows:
                return
            await asyncio.sleep(PAUSE_S)

    async def _sum_up_telemetry(self, swept: Swept, now: float) -> None:
        """Stations' messages past the telemetry retention: their port readings summed up per
        5-minute bucket and deleted in the same transaction, so that a crash in between
        neither loses a reading nor counts one twice. Whole buckets: the cut-off is rounded
        down to a bucket's start, so that a bucket is summed up once, when all of it expired
        (unless readings for it come late: they are added to it)."""
        before = now - self.policy.telemetry_days * DAY_S
        past_end = math.floor(before / BUCKET_S) * BUCKET_S
        stations = set(await self._devices("station_samples", "station"))
        stations.update(await self._devices("port_samples", "station"))
        for station in sorted(stations):
            # the past: device time before the cut-off, received before it too
            await self._sum_up_range(
                swept, station, now, lo_min=-math.inf, hi_max=past_end, received=before
            )
            # a clock running ahead: received before the cut-off
            await self._sum_up_range(
                swept, station, now, lo_min=now + AHEAD_S, hi_max=math.inf, received=before
            )

    async def _sum_up_range(
        self,
        swept: Swept,
        station: str,
        now: float,
        *,
        lo_min: float,
        hi_max: float,
        received: float,
    ) -> None:
        """Sum up and delete `station`'s messages with device time in (lo_min, hi_max) and
        received before `received`, oldest first, a window of whole buckets at a time, the
        window sized by the last one's rows to about `batch_rows` port readings."""
        buckets = 1
        while True:
            lo = await self._oldest(station, lo_min, hi_max, received)
            if lo is None or lo >= hi_max:
                return
            start = math.floor(lo / BUCKET_S) * BUCKET_S
            params = {
                "station": station,
                "lo": max(start, lo_min),
                "hi": min(start + buckets * BUCKET_S, hi_max),
                "received": received,
                "bucket_s": BUCKET_S,
                "now": now,
            }
            async with self._batch(swept) as conn:
                summed = (await conn.execute(_SUM_UP, params)).rowcount
                ports = (await conn.execute(_DROP_PORTS, params)).rowcount
                messages = (await conn.execute(_DROP_MESSAGES, params)).rowcount
            swept.buckets += max(summed, 0)
            self._count(swept, "port_samples", ports)
            self._count(swept, "station_samples", messages)
            buckets = max(1, min(MAX_WINDOW_BUCKETS, buckets * self._batch_rows // max(ports, 1)))
            await asyncio.sleep(PAUSE_S)

    async def _oldest(
        self, station: str, after: float, below: float, received: float
    ) -> float | None:
        """The device time of `station`'s oldest message in (after, below) received before
        `received` (a message is in station_samples, its readings in port_samples). Walks the
        key from `after`: rows received since (a clock running behind) are stepped over, the
        first expired one ends the walk."""
        oldest: float | None = None
        for table in ("station_samples", "port_samples"):
            sql = (
                f"SELECT ts FROM {table} WHERE station = ? AND ts > ? AND ts < ?"  # noqa: S608
                " AND received_at < ? ORDER BY ts LIMIT 1"
            )
            found = await self._read(sql, (station, after, below, received))
            if found:
                value = float(found[0][0])  # type: ignore[arg-type]  # ts: a REAL
                oldest = value if oldest is None else min(oldest, value)
        return oldest

    async def _devices(self, table: str, column: str) -> list[str]:
        found = [str(row[0]) for row in await self._read(_devices_sql(table, column), ())]
        return found if self._mine is None else [d for d in found if d in self._mine]

    async def _read(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        """A read on the writer's connection outside any transaction of ours (WAL: it takes no
        lock), in one call, so that no other task's statement comes between its steps."""
        return await self._writer.read(sql, params)

    @contextlib.asynccontextmanager
    async def _batch(self, swept: Swept) -> AsyncIterator[Connection]:
        """One transaction of the shared writer, its length (waiting included) kept."""
        started = time.perf_counter()
        try:
            async with self._writer.transaction() as conn:
                yield conn
        finally:
            swept.batches += 1
            swept.longest_batch_s = max(swept.longest_batch_s, time.perf_counter() - started)

    def _count(self, swept: Swept, table: str, deleted: int) -> None:
        if deleted > 0:
            swept.deleted[table] = swept.deleted.get(table, 0) + deleted
            self._metrics.retention_deleted.labels(table).inc(deleted)
