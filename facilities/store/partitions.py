"""PostgreSQL's telemetry partitions: a day of device time each, made ahead, dropped whole
once expired (docs/postgresql.md, "Telemetry partitions").

SQLite deletes expired rows a batch at a time (facilities/store/retention.py); PostgreSQL
drops a day's partition instead, its port readings summed up into `port_buckets` in the same
transaction, so that a crash in between neither loses a reading nor counts one twice. A
partition is dropped only when every row in it is past its retention by device time and by
the time it was received (a clock running behind keeps its rows as long as any other's, as
on SQLite); what is not dropped is left to the row-by-row sweep, which works on a partitioned
table as on any other."""

import logging
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from facilities.store.db import SharedWriter
from facilities.store.sql import Connection

log = logging.getLogger(__name__)

DAY_S = 86_400
# Days of partitions made around today: a device clock a little behind or ahead still writes
# into a day's partition; one further off writes into the table's DEFAULT partition.
DAYS_BEHIND = 1
DAYS_AHEAD = 2

# table → the retention it follows (Policy's telemetry or events)
TELEMETRY_TABLES = ("station_samples", "port_samples", "garage_samples")
EVENT_TABLES = ("charging_events", "gate_events")
TABLES = TELEMETRY_TABLES + EVENT_TABLES
_DAY_NAME = re.compile(r"_d(\d{8})$")
# Held (pg_advisory_xact_lock) by the transaction that makes or drops a day: several instances
# on one database (--partition, docs/scaling.md) each sweep, and a day is made or summed up once.
_LOCK = 0x66616332  # "fac2"

# Readings summed up per bucket are added to what a bucket already holds; its last reading is
# the one with the largest (ts, seq). The head and tail of every such INSERT (retention.py's
# per station, _SUM_UP_DAY's per day).
INTO_BUCKETS = """
INSERT INTO port_buckets AS b (station, start, port, samples, power_n, power_sum,
                               max_power_w, last_ts, last_seq, last_state, updated_at)
"""
ADDED_TO_BUCKETS = """
ON CONFLICT (station, start, port) DO UPDATE SET
    samples = b.samples + excluded.samples,
    power_n = b.power_n + excluded.power_n,
    power_sum = coalesce(b.power_sum + excluded.power_sum, b.power_sum, excluded.power_sum),
    max_power_w = coalesce(max(b.max_power_w, excluded.max_power_w), b.max_power_w,
                           excluded.max_power_w),
    last_ts = CASE WHEN (excluded.last_ts, excluded.last_seq) > (b.last_ts, b.last_seq)
                   THEN excluded.last_ts ELSE b.last_ts END,
    last_state = CASE WHEN (excluded.last_ts, excluded.last_seq) > (b.last_ts, b.last_seq)
                      THEN excluded.last_state ELSE b.last_state END,
    last_seq = CASE WHEN (excluded.last_ts, excluded.last_seq) > (b.last_ts, b.last_seq)
                    THEN excluded.last_seq ELSE b.last_seq END,
    updated_at = excluded.updated_at
"""

# A day of port readings summed up per station, port and 5-minute bucket (retention.py's
# _SUM_UP, for every station of the day at once).
_SUM_UP_DAY = (
    INTO_BUCKETS  # noqa: S608 (constants)
    + """
SELECT station, bucket * :bucket_s, port, count(*), count(power_w), sum(power_w),
       max(power_w), last_ts, last_seq, last_state, :now
FROM (
    SELECT station, CAST(ts / :bucket_s AS INTEGER) AS bucket, port, power_w,
           last_value(ts) OVER w AS last_ts, last_value(seq) OVER w AS last_seq,
           last_value(state) OVER w AS last_state
    FROM {partition}
    WINDOW w AS (PARTITION BY station, CAST(ts / :bucket_s AS INTEGER), port ORDER BY ts, seq
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
) AS readings
GROUP BY station, bucket, port, last_ts, last_seq, last_state
"""
    + ADDED_TO_BUCKETS
)


def day_of(at: float) -> float:
    """The start (Unix seconds, UTC) of the day of `at`."""
    return math.floor(at / DAY_S) * DAY_S


def partition_name(table: str, day: float) -> str:
    return f"{table}_d{datetime.fromtimestamp(day, UTC):%Y%m%d}"


def _day_of_name(name: str) -> float | None:
    match = _DAY_NAME.search(name)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC).timestamp()


@dataclass(slots=True)
class Dropped:
    """What one pass dropped: partitions, the rows they held per table, buckets written."""

    partitions: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    buckets: int = 0


async def make_days(writer: SharedWriter, now: float) -> int:
    """Make the partitions of the days around `now` that are missing; return how many.
    Rows of such a day already in the DEFAULT partition are moved into the new one."""
    made = 0
    today = day_of(now)
    for table in TABLES:
        existing = set(await partitions_of(writer, table))
        for n in range(-DAYS_BEHIND, DAYS_AHEAD + 1):
            day = today + n * DAY_S
            if day not in existing and await _make_day(writer, table, day):
                made += 1
    return made


async def partitions_of(writer: SharedWriter, table: str) -> list[float]:
    """The days `table` has a partition for."""
    rows = await writer.read(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = CAST(? AS regclass)",
        (table,),
    )
    days = (_day_of_name(str(name)) for (name,) in rows)
    return sorted(day for day in days if day is not None)


async def _make_day(writer: SharedWriter, table: str, day: float) -> bool:
    """Make `table`'s partition of `day`; False if another instance made it meanwhile."""
    name, default = partition_name(table, day), f"{table}_default"
    bounds = f"FROM ({day!r}) TO ({day + DAY_S!r})"
    async with writer.transaction() as conn:
        if await _exists_under_lock(conn, name):
            return False
        async with conn.execute(
            f"SELECT 1 FROM {default} WHERE ts >= ? AND ts < ? LIMIT 1",  # noqa: S608
            (day, day + DAY_S),
        ) as cursor:
            strays = await cursor.fetchone() is not None
        if not strays:
            await conn.execute(f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES {bounds}")
            return True
        # The default holds rows of this day (a clock that was off, or rows written before
        # the day was made): PostgreSQL refuses the new partition while they are there.
        await conn.execute(f"ALTER TABLE {table} DETACH PARTITION {default}")
        await conn.execute(f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES {bounds}")
        await conn.execute(
            f"INSERT INTO {name} SELECT * FROM {default} WHERE ts >= ? AND ts < ?",  # noqa: S608
            (day, day + DAY_S),
        )
        await conn.execute(
            f"DELETE FROM {default} WHERE ts >= ? AND ts < ?",  # noqa: S608
            (day, day + DAY_S),
        )
        await conn.execute(f"ALTER TABLE {table} ATTACH PARTITION {default} DEFAULT")
    log.info("moved %s's rows of %s from its default partition into %s", table, name, name)
    return True


async def drop_expired(
    writer: SharedWriter,
    *,
    now: float,
    telemetry_before: float,
    events_before: float,
    bucket_s: float,
) -> Dropped:
    """Drop the day partitions whose every row is past its retention: device time before
    the cut-off (the whole day) and received before it. A day's station messages and port
    readings go together, the readings summed up into `port_buckets` first, all in one
    transaction."""
    dropped = Dropped()
    messages = set(await partitions_of(writer, "station_samples"))
    for day in await partitions_of(writer, "port_samples"):
        if day + DAY_S > telemetry_before:
            break
        tables = ["port_samples"] + (["station_samples"] if day in messages else [])
        pair = [partition_name(table, day) for table in tables]
        started = time.perf_counter()
        async with writer.transaction() as conn:
            if not await _exists_under_lock(conn, pair[0]):
                continue  # another instance dropped it meanwhile
            if not await _all_received_before(conn, pair, telemetry_before):
                continue
            rows = {t: await _count(conn, p) for t, p in zip(tables, pair, strict=True)}
            summed = await conn.execute(
                _SUM_UP_DAY.format(partition=pair[0]), {"bucket_s": bucket_s, "now": now}
            )
            dropped.buckets += max(summed.rowcount, 0)
            for partition in pair:
                await conn.execute(f"DROP TABLE IF EXISTS {partition}")
        _add(dropped, rows)
        log.info(
            "retention: dropped the day %s of station telemetry (%s) in %.2f s",
            pair[0][-8:],
            rows,
            time.perf_counter() - started,
        )
    alone = {"garage_samples": telemetry_before} | dict.fromkeys(EVENT_TABLES, events_before)
    for table, before in alone.items():
        for day in await partitions_of(writer, table):
            if day + DAY_S > before:
                break
            partition = partition_name(table, day)
            async with writer.transaction() as conn:
                if not await _exists_under_lock(conn, partition):
                    continue
                if not await _all_received_before(conn, [partition], before):
                    continue
                rows = {table: await _count(conn, partition)}
                await conn.execute(f"DROP TABLE IF EXISTS {partition}")
            _add(dropped, rows)
    return dropped


async def _all_received_before(conn: Connection, partitions: list[str], before: float) -> bool:
    for partition in partitions:
        async with conn.execute(
            f"SELECT 1 FROM {partition} WHERE received_at >= ? LIMIT 1",  # noqa: S608
            (before,),
        ) as cursor:
            if await cursor.fetchone() is not None:
                return False
    return True


async def _exists_under_lock(conn: Connection, partition: str) -> bool:
    """Take the partitions' lock for this transaction, then look whether `partition` is
    there: what another instance did before the lock was granted is seen."""
    await conn.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
    # pg_class read by a query, not to_regclass: a statement's snapshot sees what committed
    # while it waited; the relation cache may not have heard of it yet
    async with conn.execute(
        "SELECT count(*) FROM pg_class WHERE relname = ? AND relnamespace = 'public'::regnamespace",
        (partition,),
    ) as cursor:
        row = await cursor.fetchone()
    return bool(row[0])


async def _count(conn: Connection, partition: str) -> int:
    async with conn.execute(f"SELECT count(*) FROM {partition}") as cursor:  # noqa: S608
        row = await cursor.fetchone()
    return int(row[0])


def _add(dropped: Dropped, rows: dict[str, int]) -> None:
    dropped.partitions += len(rows)
    for table, count in rows.items():
        dropped.rows[table] = dropped.rows.get(table, 0) + count
