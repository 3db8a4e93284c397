"""Whether the service can do its job now (GET /healthz), and if not, why."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from facilities.mqtt.ingest import Ingest
from facilities.mqtt.session import BrokerLink
from facilities.rules.runner import RulesRunner
from facilities.store.db import ping
from facilities.store.sql import ERRORS, Connection

_FAILURES: tuple[type[Exception], ...] = (TimeoutError, *ERRORS, ValueError)

# The ingest writer is stuck when messages have waited this long with no commit: 60 times its
# 50 ms flush interval, and under the database's 5 s busy timeout. Its progress is sampled
# this often.
INGEST_STUCK_S = 3.0
INGEST_WATCH_EVERY_S = 0.5
# The database's answer to the ping is awaited this long.
PING_TIMEOUT_S = 1.0


@dataclass(slots=True)
class Health:
    """Whether the service can do its job now, and if not, why."""

    ok: bool
    reasons: list[str] = field(default_factory=list)


class HealthCheck:
    """Each part's heartbeat and a ping of the database, with a reason for each that stopped
    (docs/operations.md, "Health")."""

    def __init__(
        self,
        *,
        ingest: Ingest,
        link: BrokerLink,
        rules: RulesRunner,
        db: Connection,
        monotonic: Callable[[], float],
    ) -> None:
        self._ingest = ingest
        self._link = link
        self._rules = rules
        self._db = db
        self._monotonic = monotonic
        self._running = False
        # the ingest writer's heartbeat: when it last had nothing waiting or committed more
        self._ingest_beat = (monotonic(), 0)
        # The ping in flight, which a timeout stops waiting for but never cancels: it runs on
        # the ingest's connection, on PostgreSQL between the statements of a batch's
        # transaction, and a statement cancelled in the server aborts that transaction.
        self._ping: asyncio.Task[None] | None = None

    async def watch(self) -> None:
        """Sample the ingest writer's progress while the service runs."""
        self._running = True
        try:
            while True:
                self._ingest_progress()
                await asyncio.sleep(INGEST_WATCH_EVERY_S)
        finally:
            self._running = False
            if self._ping is not None:  # the ingest writer has stopped before this task
                self._ping.cancel()

    def _ingest_progress(self) -> float:
        """Seconds the ingest writer has had messages waiting without committing any."""
        ingest, now = self._ingest, self._monotonic()
        since, committed = self._ingest_beat
        if ingest.waiting == 0 or ingest.committed != committed:
            self._ingest_beat = (now, ingest.committed)
            return 0.0
        return now - since

    async def __call__(self) -> Health:
        """The reasons the service cannot do its job now: broker link, database, the rules'
        tick and writer, the ingest writer."""
        if not self._running:
            return Health(ok=False, reasons=["the service is not running"])
        # the heartbeats first, before any await: what they say is about now
        reasons = self._rules.stalls()
        stuck_s = self._ingest_progress()
        if stuck_s > INGEST_STUCK_S:
            reasons.append(f"ingest writer stuck ({stuck_s:.0f} s with messages waiting)")
        fault = self._ingest.faults.reason()  # kept, not acknowledged, and written again
        if fault is not None:
            reasons.append(fault)
        link = self._link
        if not link.connected:
            reasons.append(f"broker link down ({link.last_error or 'not connected'})")
        elif not link.subscribed:
            reasons.append("not subscribed to the broker yet")
        if self._ping is None or self._ping.done():
            self._ping = asyncio.create_task(ping(self._db), name="health-ping")
            self._ping.add_done_callback(_retrieved)
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await asyncio.shield(self._ping)
        except _FAILURES as exc:
            reasons.append(f"database not answering ({exc or 'timeout'})")
        return Health(ok=not reasons, reasons=reasons)


def _retrieved(task: "asyncio.Task[None]") -> None:
    """A ping that ended after its /healthz answer: its failure was reported as a timeout."""
    if not task.cancelled():
        task.exception()
