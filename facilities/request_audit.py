"""Gate opens and port power requests audited, allowed or refused, with the status the client
is answered (from api/errors.py, given by the composition) and what came of it."""

import asyncio
import contextlib
import logging
from collections.abc import Callable

from facilities.access import RateLimiter
from facilities.answers import Answer, Ask, Done
from facilities.errors import Refusal
from facilities.metrics import ApiMetrics
from facilities.refusals import Refusals
from facilities.store import audit
from facilities.store.db import SharedWriter
from facilities.write_faults import WriteFaults, database_fault

log = logging.getLogger(__name__)

# A token holder's refusals (403, 404, 409, 429, …) written as a row each in any minute;
# past it they are counted per minute like refusals without a token. A resident who taps a
# gate they may not open a few times is in the audit request by request; a script with a
# leaked token is a row a minute (measured before: 10 loops wrote 1,121 rows in 10 s).
REFUSAL_ROWS_PER_MINUTE = 10
# How long a request waits for its own writes (its audit row, the answer kept for its key)
# before it is answered all the same: they are written when the database can take them.
WRITE_WAIT_S = 1.0
# Audited requests kept in memory while the database cannot take them (written by the
# refusals writer once it can): the same bound as the writer's.
UNWRITTEN_KEPT = audit.REQUESTS_KEPT

# How a request's refusals are grouped in the audit: by its route, as refusals without a token.
_ROUTES = {
    "gate_open": "POST /api/garages/{garage}/gates/{gate}/open",
    "port_power": "POST /api/stations/{station_id}/ports/{port}/power",
}


async def within(task: "asyncio.Task[None]", seconds: float) -> None:
    """Wait for `task` at most `seconds`; it goes on after that, and what it raises within
    them is raised here."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), seconds)


class RequestAudit:
    """Keeps each request in the audit log; a token holder's refusals past the first few a
    minute are counted per minute instead (docs/api.md, "Refusals")."""

    def __init__(
        self,
        writer: SharedWriter,
        *,
        clock: Callable[[], float],
        http_status: Callable[[Refusal | None], int],
        refusals: Refusals,
        refusal_rows: RateLimiter,
        metrics: ApiMetrics | None = None,
    ) -> None:
        self._writer = writer
        self._clock = clock
        self._http_status = http_status
        self._refusals = refusals
        self._refusal_rows = refusal_rows
        self._metrics = metrics
        self._unwritten: list[audit.Request] = []
        self._writing: set[asyncio.Task[None]] = set()
        self.not_kept = 0
        self.faults = WriteFaults("request audit")

    def status(self, answer: Answer | Refusal) -> int:
        """The HTTP status the client is answered."""
        return self._http_status(None if isinstance(answer, Done) else answer)

    async def record(
        self,
        action: str,
        target: str,
        ask: Ask,
        answer: Answer | Refusal,
        outcome: str,
        command_id: str | None = None,
    ) -> None:
        """Keep the request, with the status it is answered and what came of it."""
        request = audit.Request(
            at=self._clock(),
            action=action,
            target=target,
            person=ask.person.id,
            client=ask.client,
            status=self.status(answer),
            outcome=outcome,
            detail=None if isinstance(answer, Done) else answer.detail,
            command_id=command_id,
            idempotency_key=ask.idempotency_key,
        )
        if action == "gate_open" and self._metrics is not None:
            self._metrics.gate_opens.labels(outcome).inc()
        person = ask.person.id
        if 400 <= request.status < 500:
            # a token holder's refusals are rows at first, then counted per minute: a leaked
            # or scripted token cannot write a row and a commit per request (docs/api.md)
            if self._refusal_rows.retry_after(person) is not None:
                route = _ROUTES[action]
                self._refusals.refused(ask.client, route, request.status, outcome, person=person)
                return
            self._refusal_rows.hit(person)
        writing = asyncio.create_task(self._write(request))
        self._writing.add(writing)
        writing.add_done_callback(self._writing.discard)
        await within(writing, WRITE_WAIT_S)  # then answered; the row is written when it can be

    async def _write(self, request: audit.Request) -> None:
        try:
            async with self._writer.transaction() as conn:
                await audit.record(conn, request)
        except Exception as exc:
            if not database_fault(exc):
                raise
            # what was done is answered all the same: the row is written when it can be
            self.faults.failed(exc, "an audited request")
            if len(self._unwritten) < UNWRITTEN_KEPT:
                self._unwritten.append(request)
            else:
                self.not_kept += 1
                if self.not_kept == 1:
                    log.error(
                        "%d audited requests wait for the database: more are not kept",
                        UNWRITTEN_KEPT,
                    )
        else:
            self.faults.succeeded()

    def take_unwritten(self) -> list[audit.Request]:
        """The audited requests the database could not take when they came, to write now."""
        taken, self._unwritten = self._unwritten, []
        return taken
