"""Write a batch of decoded messages in one transaction; count what was new."""

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import NamedTuple, cast

from facilities.charging.payloads import StationEvent, StationTelemetry
from facilities.garage.payloads import GarageTelemetry, GateEvent
from facilities.messages import Accepted, MessageKind, Rejected, Route
from facilities.store.sql import Connection
from facilities.wire import Availability

# A quarantined message keeps this much of its payload, with the SHA-256 and length of all
# of it (migration 009): enough to see what a device sent (a whole telemetry message of ten
# ports is ~900 bytes), never its 64 KiB. Its topic is cut too (MQTT allows 64 KiB); topics
# of the protocol are under 100 characters.
QUARANTINE_PREFIX_BYTES = 1024
QUARANTINE_TOPIC_CHARS = 256

# Table → (INSERT prefix, columns[, what follows the VALUES]). Rows are written as multi-row
# INSERTs: one statement per chunk instead of one step per row, so the writer thread gives up
# the GIL once per chunk rather than once per row (per-row handoffs with paho's busy network
# thread cut throughput tenfold in the ingest benchmark).
_TABLES: dict[str, tuple[str, int] | tuple[str, int, str]] = {
    "station": ("INSERT OR IGNORE INTO station_samples VALUES ", 7),
    "port": ("INSERT OR IGNORE INTO port_samples VALUES ", 11),
    "event": ("INSERT OR IGNORE INTO charging_events VALUES ", 7),
    "garage": ("INSERT OR IGNORE INTO garage_samples VALUES ", 7),
    "gate": ("INSERT OR IGNORE INTO gate_events VALUES ", 7),
    "availability": (
        "INSERT INTO availability_changes (device_kind, device, status, received_at) VALUES ",
        4,
    ),
    # Stored once (migration 006): a bad message redelivered is the same (topic, digest).
    "quarantine": (
        "INSERT OR IGNORE INTO quarantine"
        " (received_at, topic, payload, reason, detail, digest, device, size) VALUES ",
        8,
    ),
    # Past a device's quota (migration 009): counted per device, hour and reason, not kept.
    "over_quota": (
        "INSERT INTO quarantine_over_quota (device, hour_start, reason, messages, bytes, last_at)"
        " VALUES ",
        6,
        " ON CONFLICT (device, hour_start, reason) DO UPDATE SET"
        " messages = quarantine_over_quota.messages + excluded.messages,"
        " bytes = quarantine_over_quota.bytes + excluded.bytes,"
        " last_at = max(quarantine_over_quota.last_at, excluded.last_at)",
    ),
}
# Rows per statement: SQLite allows 32,766 bound variables; 500 rows of 11 columns stay far
# below, and larger statements gained nothing measurable. Only these sizes, largest first:
# the driver keeps every distinct statement text prepared (128 per connection, ~0.5 MB for
# one of 500 port rows), so a statement per batch size grew the writer's memory in steps
# (docs/reliability.md, the soak); five sizes per table keep it bounded.
CHUNK_SIZES = (500, 100, 20, 5, 1)
_MESSAGE_TABLES = ("station", "event", "garage", "gate", "quarantine")

Row = tuple[object, ...]


class MessageRows(NamedTuple):
    """An accepted device message as the rows it is stored as, with what ingest counts of it.

    Ingest keeps a message in this form from the moment the rules have seen it until its batch
    commits: a ten-port telemetry message is ~35 model objects that the collector would walk
    while they wait, and 12 tuples of plain values that it stops looking at once it has seen
    them (docs/performance.md, "A message kept as its rows"). A named tuple: made once per
    message on paho's thread (docs/performance.md, "Tuples on the hot path")."""

    route: Route
    table: str  # station, event, garage or gate
    row: Row
    ports: tuple[Row, ...] = ()  # a telemetry message's port rows
    extra_fields: int = 0  # fields the protocol does not name (counted, not stored)
    gate_event: str | None = None  # a gate event's type (counted per gate)


def message_rows(message: Accepted) -> MessageRows | None:
    """The rows of an accepted message; None for acks and availability, which have none of
    their own (the command sender matches acks; availability is recorded when it changes)."""
    p, route, at = message.payload, message.route, message.received_at
    device, extra = route.device, message.extra_fields
    if isinstance(p, StationTelemetry):
        station = (device, p.ts, p.seq, at, p.temp_c, p.leakage_ma, _bool(p.smoke))
        ports = tuple(
            [
                (
                    device,
                    p.ts,
                    p.seq,
                    r.port,
                    at,
                    r.state._value_,  # the plain attribute: `.value` is a descriptor call
                    r.voltage_v,
                    r.current_a,
                    r.power_w,
                    r.energy_wh,
                    r.temp_c,
                )
                for r in p.ports
            ]
        )
        return MessageRows(route, "station", station, ports, extra)
    if isinstance(p, StationEvent):
        event = (device, p.ts, p.seq, at, p.port, p.type.value, p.code)
        return MessageRows(route, "event", event, extra_fields=extra)
    if isinstance(p, GarageTelemetry):
        garage = (device, p.ts, p.seq, at, p.occupancy, p.temp_c, _bool(p.smoke))
        return MessageRows(route, "garage", garage, extra_fields=extra)
    if isinstance(p, GateEvent):
        gate = (device, route.gate, p.ts, p.seq, at, p.type.value, p.credential)
        return MessageRows(route, "gate", gate, extra_fields=extra, gate_event=p.type.value)
    return None


@dataclass(slots=True)
class BatchRows:
    """Rows of one batch, per table."""

    tables: dict[str, list[Row]] = field(default_factory=lambda: {k: [] for k in _TABLES})
    # (device, hour, reason) → its row in tables["over_quota"]
    over_quota_rows: dict[tuple[str, float, str], int] = field(default_factory=dict)

    def add(self, message: Accepted) -> None:
        """Add the rows of one accepted message (acks and availability are handled apart)."""
        rows = message_rows(message)
        if rows is not None:
            self.add_rows(rows)

    def add_rows(self, rows: MessageRows) -> None:
        """Add the rows of one accepted message, made already (`message_rows`)."""
        self.tables[rows.table].append(rows.row)
        if rows.ports:
            self.tables["port"].extend(rows.ports)

    def add_availability(self, message: Accepted) -> None:
        assert isinstance(message.payload, Availability)
        kind = "station" if message.route.kind is MessageKind.STATION_AVAILABILITY else "garage"
        self.tables["availability"].append(
            (kind, message.route.device, message.payload.value, message.received_at)
        )

    def add_rejected(self, rejected: Rejected) -> None:
        """A quarantine row: the payload's prefix, with the hash and length of all of it."""
        self.tables["quarantine"].append(
            (
                rejected.received_at,
                rejected.topic[:QUARANTINE_TOPIC_CHARS],
                rejected.raw[:QUARANTINE_PREFIX_BYTES],
                rejected.reason.value,
                rejected.detail,
                quarantine_digest(rejected.raw),
                rejected.device,
                len(rejected.raw),
            )
        )

    def add_over_quota(self, rejected: Rejected) -> None:
        """A bad message past its device's quota: one more in the hour's count. One row per
        (device, hour, reason) in a batch: one statement may not update a row twice
        (PostgreSQL refuses it; SQLite applied them one after the other)."""
        key = (rejected.device, hour_start(rejected.received_at), rejected.reason.value)
        rows = self.tables["over_quota"]
        at = self.over_quota_rows.setdefault(key, len(rows))
        if at == len(rows):
            rows.append((*key, 1, len(rejected.raw), rejected.received_at))
            return
        messages, size, last_at = cast(tuple[int, int, float], rows[at][3:])
        rows[at] = (
            *key,
            messages + 1,
            size + len(rejected.raw),
            max(last_at, rejected.received_at),
        )


def hour_start(at: float) -> float:
    """The start of the hour of `at` (Unix seconds), as the queries below compute it too."""
    return float(math.floor(at / 3600) * 3600)


def quarantine_digest(raw: bytes) -> bytes:
    """What identifies a quarantined message on its topic: the SHA-256 of all its bytes (the
    broker redelivers the very same bytes; docs/protocol.md, "What happens to bad input")."""
    return hashlib.sha256(raw).digest()


async def write_batch(conn: Connection, batch: BatchRows) -> int:
    """Insert the batch in one transaction; return how many messages were new (not dups)."""
    inserted = 0
    await conn.execute("BEGIN IMMEDIATE")
    try:
        for name, rows in batch.tables.items():
            count = await _insert_rows(conn, name, rows)
            if name in _MESSAGE_TABLES:
                inserted += count
        await conn.commit()
    except BaseException:
        await conn.rollback()
        raise
    return inserted


async def _insert_rows(conn: Connection, table: str, rows: Sequence[Row]) -> int:
    # The chunks of one size go in one `executemany`: one hand-off to the driver's thread
    # (and one wake-up of the event loop) per size instead of per chunk, the statement still
    # stepped once per chunk (docs/performance.md, "One hand-off per statement size").
    prefix, columns, *suffix = _TABLES[table]
    inserted = start = 0
    for size, count in chunk_counts(len(rows)):
        chunks = []
        for _ in range(count):
            chunks.append(list(chain.from_iterable(rows[start : start + size])))
            start += size
        cursor = await conn.executemany(
            prefix + _placeholders(columns, size) + "".join(suffix), chunks
        )
        inserted += cursor.rowcount
    return inserted


def chunk_counts(rows: int) -> list[tuple[int, int]]:
    """`rows` cut into statements of the sizes in CHUNK_SIZES, largest first: (size, how
    many statements of it), for the sizes used."""
    counts = []
    for size in CHUNK_SIZES:
        count, rows = divmod(rows, size)
        if count:
            counts.append((size, count))
    return counts


def chunk_sizes(rows: int) -> list[int]:
    """`rows` cut into statements of the sizes in CHUNK_SIZES, largest first."""
    return [size for size, count in chunk_counts(rows) for _ in range(count)]


@functools.cache
def _placeholders(columns: int, rows: int) -> str:
    row = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([row] * rows)


async def last_availability(conn: Connection) -> dict[str, str]:
    """The last recorded availability of each device, to store only changes after a restart."""
    sql = (
        "SELECT device, status FROM availability_changes WHERE id IN"
        " (SELECT max(id) FROM availability_changes GROUP BY device)"
    )
    async with conn.execute(sql) as cursor:
        return {str(row[0]): str(row[1]) for row in await cursor.fetchall()}


def _bool(value: bool | None) -> int | None:
    return None if value is None else int(value)


async def quarantined_last_hour(conn: Connection) -> dict[str, tuple[float, int]]:
    """Per device, the last hour it has quarantine rows in (its start, Unix seconds) and how
    many: what each device has used of its quota, also across a restart."""
    async with conn.execute(
        "SELECT device, CAST(received_at / 3600 AS INTEGER) * 3600.0 AS hour, count(*)"
        " FROM quarantine"
        " WHERE received_at >= (SELECT max(received_at) - 3600 FROM quarantine)"
        " GROUP BY device, hour ORDER BY hour"
    ) as cursor:
        return {str(row[0]): (float(row[1]), int(row[2])) for row in await cursor.fetchall()}
