"""A database that cannot take a write now (locked past the busy timeout, full, failing): the
writer keeps what it had to write, waits and tries again; this says what to log, when to try
again and what /healthz tells (docs/reliability.md, "A database that cannot be written")."""

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

import psycopg

log = logging.getLogger(__name__)

T = TypeVar("T")

# Between tries: doubled from the first to the last. A locked database already made the try
# wait the busy timeout (5 s, store/db.py); a failing one is not asked more than every 5 s.
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 5.0
# SQLite's primary result codes of a lock another connection holds (the extended codes carry
# them in their low byte).
_LOCK_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
# PostgreSQL's: a lock not granted in time, a deadlock or serialization failure (both
# TransactionRollbackError) that one transaction loses to another.
_PG_LOCKS = (psycopg.errors.LockNotAvailable, psycopg.errors.TransactionRollback)


class Fault(StrEnum):
    LOCKED = "locked"  # another connection holds the write lock: it passes
    FAILED = "failed"  # disk full, I/O error, read-only or corrupt file: a person must act


def database_fault(exc: BaseException) -> bool:
    """Whether `exc` is the database's failure rather than the data's (a constraint, a value
    it cannot bind) or a bug: what a writer waits out and tries again."""
    # PostgreSQL's OperationalError: the server gone, shut down, a lock, a query cancelled
    return (
        isinstance(exc, sqlite3.OperationalError | psycopg.OperationalError)
        or type(exc) is sqlite3.DatabaseError
    )


def fault_of(exc: BaseException) -> Fault:
    if isinstance(exc, psycopg.Error):
        return Fault.LOCKED if isinstance(exc, _PG_LOCKS) else Fault.FAILED
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return Fault.LOCKED if code & 0xFF in _LOCK_CODES else Fault.FAILED
    return Fault.LOCKED if "locked" in str(exc) or "busy" in str(exc) else Fault.FAILED


class WriteFaults:
    """One writer's failed tries since its last write that went through: logged once when it
    starts failing (and when its kind of failure changes) and once when it writes again; the
    wait before the next try; the reason /healthz gives meanwhile."""

    def __init__(self, writer: str, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.writer = writer
        self._monotonic = monotonic
        self._since: float | None = None
        self._fault: Fault | None = None
        self._error = ""
        self._tries = 0

    def failed(self, exc: BaseException, what: str) -> tuple[Fault, float]:
        """A try failed with `exc` (`what` was being written): its kind and the seconds to
        wait before the next."""
        fault = fault_of(exc)
        if self._since is None:
            self._since = self._monotonic()
        if fault is not self._fault:
            level = logging.WARNING if fault is Fault.LOCKED else logging.ERROR
            log.log(
                level,
                "%s cannot write to the database (%s: %s): %s kept, tried again every %.0f s"
                " at most until it can",
                self.writer,
                fault,
                exc,
                what,
                RETRY_MAX_S,
            )
        self._fault, self._error = fault, str(exc)
        self._tries += 1
        return fault, min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self._tries - 1))

    def succeeded(self) -> None:
        if self._since is not None:
            log.warning(
                "%s writes to the database again after %.1f s (%d failed tries)",
                self.writer,
                self._monotonic() - self._since,
                self._tries,
            )
        self._since, self._fault, self._error, self._tries = None, None, "", 0

    def reason(self) -> str | None:
        """Why this writer cannot write now, for /healthz (None: it can, as far as it knows)."""
        if self._since is None:
            return None
        seconds = self._monotonic() - self._since
        if self._fault is Fault.LOCKED:
            return f"database locked ({self.writer} retrying for {seconds:.0f} s)"
        return f"database failing ({self.writer} stopped {seconds:.0f} s ago: {self._error})"

    async def until_written(self, write: Callable[[], Awaitable[T]], what: str) -> T:
        """`write()` (one transaction), tried again after each database fault until it goes
        through; any other error is raised."""
        while True:
            try:
                result = await write()
            except Exception as exc:
                if not database_fault(exc):
                    raise
                _, wait_s = self.failed(exc, what)
                await asyncio.sleep(wait_s)
                continue
            self.succeeded()
            return result
