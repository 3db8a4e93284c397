"""Write a batch of decoded messages in one transaction; count what was new."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosqlite

from facilities.charging.payloads import StationEvent, StationTelemetry
from facilities.garage.payloads import GarageTelemetry, GateEvent
from facilities.messages import Accepted, MessageKind, Rejected
from facilities.wire import MAX_PAYLOAD_BYTES, Availability

_INSERT = {
    "station": "INSERT OR IGNORE INTO station_samples VALUES (?, ?, ?, ?, ?, ?, ?)",
    "port": "INSERT OR IGNORE INTO port_samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "event": "INSERT OR IGNORE INTO charging_events VALUES (?, ?, ?, ?, ?, ?, ?)",
    "garage": "INSERT OR IGNORE INTO garage_samples VALUES (?, ?, ?, ?, ?, ?, ?)",
    "gate": "INSERT OR IGNORE INTO gate_events VALUES (?, ?, ?, ?, ?, ?, ?)",
}
_INSERT_AVAILABILITY = (
    "INSERT INTO availability_changes (device_kind, device, status, received_at)"
    " VALUES (?, ?, ?, ?)"
)
_INSERT_QUARANTINE = (
    "INSERT INTO quarantine (received_at, topic, payload, reason, detail) VALUES (?, ?, ?, ?, ?)"
)

Row = tuple[object, ...]


@dataclass(slots=True)
class BatchRows:
    """Rows of one batch, per table."""

    tables: dict[str, list[Row]] = field(default_factory=lambda: {k: [] for k in _INSERT})
    availability: list[Row] = field(default_factory=list)
    quarantine: list[Row] = field(default_factory=list)

    def add(self, message: Accepted) -> None:
        """Add the rows of one accepted message (acks and availability are handled apart)."""
        p, device, at = message.payload, message.route.device, message.received_at
        if isinstance(p, StationTelemetry):
            self.tables["station"].append(
                (device, p.ts, p.seq, at, p.temp_c, p.leakage_ma, _bool(p.smoke))
            )
            self.tables["port"].extend(
                (
                    device,
                    p.ts,
                    p.seq,
                    r.port,
                    at,
                    r.state.value,
                    r.voltage_v,
                    r.current_a,
                    r.power_w,
                    r.energy_wh,
                    r.temp_c,
                )
                for r in p.ports
            )
        elif isinstance(p, StationEvent):
            self.tables["event"].append((device, p.ts, p.seq, at, p.port, p.type.value, p.code))
        elif isinstance(p, GarageTelemetry):
            self.tables["garage"].append(
                (device, p.ts, p.seq, at, p.occupancy, p.temp_c, _bool(p.smoke))
            )
        elif isinstance(p, GateEvent):
            self.tables["gate"].append(
                (device, message.route.gate, p.ts, p.seq, at, p.type.value, p.credential)
            )

    def add_availability(self, message: Accepted) -> None:
        assert isinstance(message.payload, Availability)
        kind = "station" if message.route.kind is MessageKind.STATION_AVAILABILITY else "garage"
        self.availability.append(
            (kind, message.route.device, message.payload.value, message.received_at)
        )

    def add_rejected(self, rejected: Rejected) -> None:
        self.quarantine.append(
            (
                rejected.received_at,
                rejected.topic,
                rejected.raw[:MAX_PAYLOAD_BYTES],
                rejected.reason.value,
                rejected.detail,
            )
        )

    def message_rows(self) -> int:
        """Rows that stand for one message each (port rows belong to a station sample)."""
        return sum(len(rows) for name, rows in self.tables.items() if name != "port")


async def write_batch(conn: aiosqlite.Connection, batch: BatchRows) -> int:
    """Insert the batch in one transaction; return how many messages were new (not dups)."""
    inserted = 0
    await conn.execute("BEGIN IMMEDIATE")
    try:
        for name, rows in batch.tables.items():
            if rows:
                cursor = await conn.executemany(_INSERT[name], rows)
                if name != "port":
                    inserted += cursor.rowcount
        await _insert_all(conn, _INSERT_AVAILABILITY, batch.availability)
        await _insert_all(conn, _INSERT_QUARANTINE, batch.quarantine)
        await conn.commit()
    except BaseException:
        await conn.rollback()
        raise
    return inserted


async def _insert_all(conn: aiosqlite.Connection, sql: str, rows: Sequence[Row]) -> None:
    if rows:
        await conn.executemany(sql, rows)


async def last_availability(conn: aiosqlite.Connection) -> dict[str, str]:
    """The last recorded availability of each device, to store only changes after a restart."""
    sql = (
        "SELECT device, status FROM availability_changes WHERE id IN"
        " (SELECT max(id) FROM availability_changes GROUP BY device)"
    )
    async with conn.execute(sql) as cursor:
        return {str(row[0]): str(row[1]) for row in await cursor.fetchall()}


def _bool(value: bool | None) -> int | None:
    return None if value is None else int(value)
