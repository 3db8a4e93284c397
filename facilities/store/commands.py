"""The rules' unfinished commands (the outbox) and closing what a stop left pending."""

import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from facilities.store.sql import Connection


@dataclass(frozen=True, slots=True)
class Queued:
    """A rules' command to send (again): its id is kept from the first try to the last."""

    id: str
    device: str
    port: int | None
    gate: str | None
    action: str
    reason: str
    alert_id: str
    # the device message that made it due (rules/observation.py: message_cause)
    cause: str | None = None


async def keep(conn: Connection, queued: Iterable[Queued], at: float) -> None:
    """Put commands in the outbox (again: a command already there keeps its row)."""
    rows = [
        (q.id, q.device, q.port, q.gate, q.action, q.reason, q.alert_id, q.cause, at)
        for q in queued
    ]
    if rows:
        await conn.executemany(
            "INSERT OR IGNORE INTO command_outbox (id, device, port, gate, action, reason,"
            " alert_id, cause, queued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


@dataclass(frozen=True, slots=True)
class Sent:
    """A command as first sent: by the rules for an alert, or by a person (no alert)."""

    id: str
    device: str
    port: int | None
    gate: str | None
    action: str
    reason: str
    requested_by: str
    alert_id: str | None
    cause: str | None
    sent_at: float


async def started(conn: Connection, sent: Sent) -> None:
    """A command's audit row, at its first send. A command sent again after a restart keeps
    its first row (and first send time)."""
    await conn.execute(
        "INSERT INTO commands (id, device, port, gate, action, reason, requested_by,"
        " alert_id, cause, sent_at, tries, outcome)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 'pending') ON CONFLICT (id) DO NOTHING",
        (
            sent.id,
            sent.device,
            sent.port,
            sent.gate,
            sent.action,
            sent.reason,
            sent.requested_by,
            sent.alert_id,
            sent.cause,
            sent.sent_at,
        ),
    )


async def finished(
    conn: Connection,
    command_id: str,
    *,
    tries: int,
    outcome: str,
    error: str | None,
    at: float,
) -> None:
    """A command's outcome in its audit row; a rules' command leaves the outbox with it,
    in the caller's commit."""
    await conn.execute(
        "UPDATE commands SET tries = ?, outcome = ?, error = ?, done_at = ? WHERE id = ?",
        (tries, outcome, error, at, command_id),
    )
    await conn.execute("DELETE FROM command_outbox WHERE id = ?", (command_id,))


async def unfinished(conn: Connection, devices: Collection[str] | None = None) -> list[Queued]:
    """The outbox, oldest first (`devices`: only theirs)."""
    sql = (
        "SELECT id, device, port, gate, action, reason, alert_id, cause FROM command_outbox"
        " ORDER BY queued_at, rowid"
    )
    async with conn.execute(sql) as cursor:
        found = [Queued(*row) async for row in cursor]
    return found if devices is None else [q for q in found if q.device in devices]


async def abandon(conn: Connection, dropped: Iterable[Queued], *, reason: str, at: float) -> None:
    """Take commands out of the outbox without sending them; their audit row (made if they
    were never sent) says why."""
    dropped = list(dropped)
    await conn.executemany(
        "INSERT INTO commands (id, device, port, gate, action, reason, requested_by, alert_id,"
        " cause, sent_at, tries, outcome, error, done_at)"
        " VALUES (?, ?, ?, ?, ?, ?, 'rules', ?, ?, ?, 0, 'abandoned', ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET outcome = 'abandoned', error = excluded.error,"
        " done_at = excluded.done_at WHERE commands.outcome = 'pending'",
        [
            (
                q.id,
                q.device,
                q.port,
                q.gate,
                q.action,
                q.reason,
                q.alert_id,
                q.cause,
                at,
                reason,
                at,
            )
            for q in dropped
        ],
    )
    await conn.executemany("DELETE FROM command_outbox WHERE id = ?", [(q.id,) for q in dropped])


async def close_pending(
    conn: Connection,
    *,
    keep_ids: Collection[str],
    reason: str,
    at: float,
    devices: Collection[str] | None = None,
) -> int:
    """Close every `pending` row not in `keep_ids` (nothing waits for its ack any more);
    with `devices` (a partition's), only theirs: the other instances wait for theirs."""
    sql = (
        "UPDATE commands SET outcome = 'abandoned', error = ?, done_at = ?"
        " WHERE outcome = 'pending' AND id NOT IN (SELECT value FROM json_each(?))"
    )
    params: tuple[object, ...] = (reason, at, json.dumps(list(keep_ids)))
    if devices is not None:
        sql += " AND device IN (SELECT value FROM json_each(?))"
        params = (*params, json.dumps(sorted(devices)))
    cursor = await conn.execute(sql, params)
    return cursor.rowcount


async def recover(
    conn: Connection,
    *,
    why_not: Callable[[Queued], str | None],
    waiting: Collection[str],
    at: float,
    devices: Collection[str] | None = None,
) -> tuple[list[Queued], int]:
    """At start: the outbox's commands to send again (`why_not` says None); the others are
    closed with its reason, and so is every other `pending` row but those in `waiting` (sent
    since the start). `devices` (a partition's): only theirs. Returns (to send again, rows
    closed)."""
    resend, dropped = [], 0
    for queued in await unfinished(conn, devices):
        reason = why_not(queued)
        if reason is None:
            resend.append(queued)
        else:
            await abandon(conn, [queued], reason=reason, at=at)
            dropped += 1
    closed = await close_pending(
        conn,
        keep_ids={q.id for q in resend} | set(waiting),
        reason="the service stopped before the answer",
        at=at,
        devices=devices,
    )
    return resend, dropped + closed
