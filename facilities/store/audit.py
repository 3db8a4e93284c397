"""Audited API requests, Idempotency-Key answers, and the audit log as staff read it."""

# The audit log puts the commands sent to devices, the API's requests and the refusals of
# requests without a valid token (counted per minute) in one time line.

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from facilities.refusals import Refusals, Refused
from facilities.store.db import SharedWriter
from facilities.store.sql import Connection
from facilities.write_faults import WriteFaults, database_fault

log = logging.getLogger(__name__)

# docs/api.md, "Opening a gate": a repeated request with the same key within 24 h gets
# the first answer again.
IDEMPOTENCY_KEPT_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class Request:
    """One API request that asked for something to happen to a device."""

    at: float
    action: str  # gate_open, port_power
    target: str  # g-hc3/north, cs-07/3
    person: str | None
    client: str
    status: int
    outcome: str
    detail: str | None = None
    command_id: str | None = None
    idempotency_key: str | None = None


async def record(conn: Connection, request: Request) -> None:
    await conn.execute(
        "INSERT INTO api_requests (at, action, target, person, client, status, outcome, detail,"
        " command_id, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            request.at,
            request.action,
            request.target,
            request.person,
            request.client,
            request.status,
            request.outcome,
            request.detail,
            request.command_id,
            request.idempotency_key,
        ),
    )


@dataclass(frozen=True, slots=True)
class Remembered:
    """The first answer to a person's key, and the request it answered (`g-hc3/north`;
    None for a key kept before targets were)."""

    target: str | None
    status: int
    body: dict[str, Any]


async def remembered(conn: Connection, person: str, key: str, *, now: float) -> Remembered | None:
    """The first answer given to this person's request with this key, within 24 h."""
    async with conn.execute(
        "SELECT target, status, body FROM idempotency"
        " WHERE person = ? AND key = ? AND created_at > ?",
        (person, key, now - IDEMPOTENCY_KEPT_S),
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    body: dict[str, Any] = json.loads(row[2])
    return Remembered(row[0], int(row[1]), body)


async def remember(
    conn: Connection,
    person: str,
    key: str,
    answer: Remembered,
    *,
    now: float,
) -> None:
    """Keep an answer for its key (replacing one older than 24 h); forget expired ones."""
    await conn.execute("DELETE FROM idempotency WHERE created_at <= ?", (now - IDEMPOTENCY_KEPT_S,))
    await conn.execute(
        "INSERT INTO idempotency (person, key, created_at, status, body, target)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (person, key) DO UPDATE SET"
        " created_at = excluded.created_at, status = excluded.status, body = excluded.body,"
        " target = excluded.target",
        (
            person,
            key,
            now,
            answer.status,
            json.dumps(answer.body, ensure_ascii=False),
            answer.target,
        ),
    )


async def record_refusals(conn: Connection, refused: Iterable[Refused]) -> None:
    """Add counted refusals to their minute's row (a group may span two writes)."""
    await conn.executemany(
        "INSERT INTO auth_refusals"
        " (minute, client, person, route, status, outcome, count, last_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (minute, client, person, route, outcome) DO UPDATE SET"
        " count = auth_refusals.count + excluded.count,"
        " last_at = max(auth_refusals.last_at, excluded.last_at)",
        [
            (r.minute, r.client, r.person, r.route, r.status, r.outcome, r.count, r.last_at)
            for r in refused
        ],
    )


@dataclass(frozen=True, slots=True)
class AuditRow:
    at: float
    kind: str  # command, request, refusals
    rowid: int
    action: str
    target: str
    who: str | None
    outcome: str
    status: int | None
    detail: str | None
    command_id: str | None
    reason: str | None
    client: str | None
    cause: str | None
    idempotency_key: str | None


# Commands the service sent and API requests, in one time line; a page continues after the
# (at, kind, rowid) of the last row of the previous page.
_AUDIT = """
SELECT at, kind, rid, action, target, who, outcome, status, detail, command_id, reason, client,
       cause, idempotency_key
FROM (
    SELECT sent_at AS at, 'command' AS kind, rowid AS rid, action,
           device || coalesce('/' || gate, '/' || port, '') AS target, requested_by AS who,
           outcome, NULL AS status, error AS detail, id AS command_id, reason, NULL AS client,
           cause, NULL AS idempotency_key
    FROM commands WHERE sent_at >= :since
    UNION ALL
    SELECT at, 'request', id, action, target, person, outcome, status, detail, command_id,
           NULL, client, NULL, idempotency_key
    FROM api_requests WHERE at >= :since
    UNION ALL
    SELECT minute, 'refusals', id, CASE person WHEN '' THEN 'authenticate' ELSE 'request' END,
           route, nullif(person, ''), outcome, status,
           count || ' in this minute, the last at ' ||
               strftime('%H:%M:%fZ', last_at, 'unixepoch'),
           NULL, NULL, client, NULL, NULL
    FROM auth_refusals WHERE minute >= :since
) AS audit
WHERE (at, kind, rid) > (:at, :kind, :rid)
ORDER BY at, kind, rid
LIMIT :limit
"""


async def audit_page(
    conn: Connection,
    *,
    since: float,
    after: tuple[float, str, int] | None,
    limit: int,
) -> list[AuditRow]:
    at, kind, rid = after or (float("-inf"), "", -1)
    params = {"since": since, "at": at, "kind": kind, "rid": rid, "limit": limit}
    async with conn.execute(_AUDIT, params) as cursor:
        return [AuditRow(*row) for row in await cursor.fetchall()]


# Refusals of requests without a valid token are written this often, in one transaction
# (docs/api.md, "Refusals"): a flood costs a few rows every few seconds, never a commit each.
REFUSALS_EVERY_S = 5.0
# Audited requests kept while the database cannot take them (~300 bytes each): past it, the
# oldest are kept and the rest dropped, with an error logged.
REQUESTS_KEPT = 10_000


class RefusalWriter:
    """Stores what `Refusals` counted, and the audited requests the database could not take
    when they were answered: every few seconds, and once more at a stop."""

    def __init__(
        self,
        refusals: Refusals,
        writer: SharedWriter,
        *,
        requests: Callable[[], list[Request]] = list,
    ) -> None:
        self._refusals = refusals
        self._writer = writer
        # audited requests the database could not take when they were answered
        self._requests = requests
        self._unwritten: list[Refused] = []  # the database could not take them: again next
        self._unwritten_requests: list[Request] = []
        self.faults = WriteFaults("refusals writer")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(REFUSALS_EVERY_S)
            await self.store()

    async def store(self) -> None:
        """Write the refusals counted since the last write, in one transaction; kept for the
        next when the database cannot take them (locked, full)."""
        refused, self._unwritten = self._unwritten + self._refusals.take(), []
        requests, self._unwritten_requests = self._unwritten_requests + self._requests(), []
        if not refused and not requests:
            return
        try:
            async with self._writer.transaction() as conn:
                if refused:
                    await record_refusals(conn, refused)
                for request in requests:
                    await record(conn, request)
        except Exception as exc:
            if not database_fault(exc):
                # a row the database refuses (a request's target it cannot store) must not
                # stop the service: this write's rows are dropped, loudly
                log.exception(
                    "%d counts of refused requests and %d audited requests not stored",
                    len(refused),
                    len(requests),
                )
                return
            self._unwritten = refused
            self._unwritten_requests = requests[:REQUESTS_KEPT]
            if len(requests) > REQUESTS_KEPT:
                log.error(
                    "%d audited requests not kept: the database cannot take them",
                    len(requests) - REQUESTS_KEPT,
                )
            self.faults.failed(
                exc, f"{len(refused)} counts of refused requests, {len(requests)} audited requests"
            )
        else:
            self.faults.succeeded()
