"""Reading the quarantine: bad device messages as kept, newest first, by device and reason."""

from dataclasses import dataclass

from facilities.store.sql import Connection

_SELECT = (
    "SELECT id, received_at, device, topic, payload, coalesce(size, length(payload)),"
    " reason, detail FROM quarantine"
)


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    id: int
    received_at: float
    device: str  # "" when the topic named no device of the site file
    topic: str  # cut at 256 characters
    payload: bytes  # the first 1 KiB
    size: int  # bytes of the whole message
    reason: str
    detail: str


async def quarantine_page(
    conn: Connection,
    *,
    device: str | None,
    reason: str | None,
    after: tuple[float, int] | None,
    limit: int,
) -> list[QuarantineRow]:
    """Quarantined messages received before `after` (time, id), newest first; only those of
    `device` and of `reason` when given. The conditions are written out, not `? IS NULL OR`,
    so that SQLite walks an index in order: `quarantine_by_device` (device, received_at) with
    a device, `quarantine_by_time` without; a reason alone is checked along the way."""
    # only these fixed conditions are joined; every value is bound
    where: list[str] = []
    params: list[object] = []
    if device is not None:
        where.append("device = ?")
        params.append(device)
    if reason is not None:
        where.append("reason = ?")
        params.append(reason)
    if after is not None:
        where.append("(received_at < ? OR (received_at = ? AND id < ?))")
        params += [after[0], after[0], after[1]]
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    sql = f"{_SELECT}{condition} ORDER BY received_at DESC, id DESC LIMIT ?"
    async with conn.execute(sql, (*params, limit)) as cursor:
        return [QuarantineRow(*row) for row in await cursor.fetchall()]
