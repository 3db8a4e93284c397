"""Who runs a partition: a lock the operating system holds for its owner and lets go when the
owner dies, however it dies (docs/scaling.md, "Failover")."""

import asyncio
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Protocol

from facilities.errors import OperatorError, UsageError
from facilities.partition import Partition
from facilities.store.sql import is_postgres, sqlite_path

log = logging.getLogger(__name__)

# A standby asks for the lock this often: the owner's death is noticed within this long
# (a tenth of the "within seconds" asked of a takeover; one system call each time).
POLL_S = 0.1


class Ownership(Protocol):
    """Ownership of one partition, held by at most one process at a time."""

    where: str  # what holds it, for the log: the lock file, the database's advisory lock
    waited_s: float  # how long `acquire` waited

    def try_acquire(self) -> bool:
        """Take it now if nobody holds it; whether we hold it."""
        ...

    async def acquire(self) -> None:
        """Wait until we hold it (cancel to stop waiting)."""
        ...

    @property
    def held(self) -> bool: ...

    def release(self) -> None:
        """Let it go (a successor may take it at once)."""
        ...


class FileOwnership:
    """An exclusive `flock` on a file beside the SQLite database: the kernel releases it when
    the process exits, SIGKILL included, so no lease or heartbeat can expire late or early.
    One machine by nature, as SQLite is; a PostgreSQL store would hold
    `pg_try_advisory_lock` on its session instead (docs/scaling.md)."""

    def __init__(self, path: Path, *, poll_s: float = POLL_S) -> None:
        self.path = path
        self.where = f"lock {path}"
        self._poll_s = poll_s
        self._fd: int | None = None
        self.waited_s = 0.0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
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

    async def acquire(self) -> None:
        started = time.monotonic()
        # another process holds it: there is no event to wait on, only the lock to ask again
        while not self.try_acquire():  # noqa: ASYNC110
            await asyncio.sleep(self._poll_s)
        self.waited_s = time.monotonic() - started

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def ownership_of(partition: Partition, db: str) -> Ownership:
    """How `partition` is owned on the store `db`: a lock file beside a SQLite file."""
    if is_postgres(db):
        raise UsageError(
            "--partition with a PostgreSQL store: its advisory-lock ownership is not written"
            " yet (docs/scaling.md, Failover)"
        )
    return FileOwnership(partition.lock_path(Path(sqlite_path(db))))
