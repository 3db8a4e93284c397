"""Who runs a partition: a lock that the operating system or the database server holds for
its owner and lets go when the owner dies, however it dies (docs/scaling.md, "Failover")."""

import asyncio
import fcntl
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Protocol

import psycopg

from facilities.errors import OperatorError
from facilities.partition import Partition
from facilities.store.sql import is_postgres, shown, sqlite_path

# A standby asks for the lock this often: the owner's death is noticed within this long
# (a tenth of the "within seconds" asked of a takeover; one system call or query each time).
POLL_S = 0.1
# The owner of a PostgreSQL advisory lock asks its lock's session this often whether it is
# still there: a session the server ended (a network cut, a restart) has let the lock go, and
# a standby may hold it within POLL_S; the owner must stop before it acts twice as long.
WATCH_S = 1.0


class Ownership(Protocol):
    """Ownership of one partition, held by at most one process at a time."""

    where: str  # what holds it, for the log: the lock file, the database's advisory lock

    async def try_acquire(self) -> bool:
        """Take it now if nobody holds it; whether we hold it."""
        ...

    async def acquire(self) -> float:
        """Wait until we hold it (cancel to stop waiting); the seconds waited."""
        ...

    async def watch(self) -> None:
        """Return only if ownership is lost (the caller must stop acting at once)."""
        ...

    async def release(self) -> None:
        """Let it go (a successor may take it at once)."""
        ...


async def _poll(ownership: Ownership) -> float:
    started = time.monotonic()
    # another process holds it: there is no event to wait on, only the lock to ask again
    while not await ownership.try_acquire():  # noqa: ASYNC110
        await asyncio.sleep(POLL_S)
    return time.monotonic() - started


class FileOwnership:
    """An exclusive `flock` on a file beside the SQLite database: the kernel releases it when
    the process exits, SIGKILL included, so no lease or heartbeat can expire late or early.
    One machine by nature, as SQLite is; nothing but the process's end lets it go."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = f"lock {path}"
        self._fd: int | None = None

    async def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise OperatorError(f"cannot open {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            raise OperatorError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        # who holds it, for an operator looking at the file (the lock itself is the truth)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    async def acquire(self) -> float:
        return await _poll(self)

    async def watch(self) -> None:
        await asyncio.Event().wait()  # held until the process ends

    async def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class PgOwnership:
    """A session-level `pg_try_advisory_lock` on a connection of its own: the server lets it
    go when that session ends (the owner killed, its machine gone, the network cut). The
    owner watches its session and stops if it is gone: a standby may own the partition then."""

    def __init__(self, url: str, partition: Partition) -> None:
        self.url = url
        self.key = lock_key(partition)
        self.where = f"advisory lock {self.key} on {shown(url)}"
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._held = False

    async def try_acquire(self) -> bool:
        if self._held:
            return True
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            cursor = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
            row = await cursor.fetchone()
        except psycopg.Error as exc:
            raise OperatorError(f"cannot ask {self.where}: {exc}") from None
        self._held = bool(row and row[0])
        return self._held

    async def acquire(self) -> float:
        return await _poll(self)

    async def watch(self) -> None:
        conn = self._conn
        while conn is not None and self._held:
            await asyncio.sleep(WATCH_S)
            try:
                await conn.execute("SELECT 1")
            except psycopg.Error:
                break
        self._held = False

    async def release(self) -> None:
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None and not conn.closed:
            await conn.close()  # the session's end lets the lock go


def lock_key(partition: Partition) -> int:
    """The advisory lock's key of `partition`: 64 bits of a hash of its name, the same in
    every process (an advisory lock is per database: one key per partition and database)."""
    digest = hashlib.sha256(f"facilities partition {partition.slug}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def ownership_of(partition: Partition, db: str) -> Ownership:
    """How `partition` is owned on the store `db`: an advisory lock of a PostgreSQL database,
    a lock file beside a SQLite file."""
    if is_postgres(db):
        return PgOwnership(db, partition)
    return FileOwnership(partition.lock_path(Path(sqlite_path(db))))
