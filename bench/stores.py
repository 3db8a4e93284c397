"""Where a benchmark's services store: a SQLite file in the work dir, or a fresh database of a
throwaway PostgreSQL started for the run (tests/support/postgres.py), whose server's own CPU
is counted too: SQLite runs inside the service, PostgreSQL beside it."""

import os
import sqlite3
import time
from pathlib import Path
from typing import Protocol

import psycopg

from tests.support.postgres import PrivatePostgres

STORES = ("sqlite", "postgresql")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# The postmaster reaps an ended backend at once; a busy machine may delay it a little.
REAP_WAIT_S = 2.0
# A backend ending takes milliseconds from its exit to its reaping.
SETTLE_S = 0.02


class Store(Protocol):
    """One kind of database for the runs of a benchmark."""

    name: str
    # How often a run asks how many messages are stored: a count(*) costs PostgreSQL a scan
    # of the rows (~2-4 ms at 30,000, measured here), SQLite a walk of its b-tree's pages.
    poll_s: float

    def new_database(self, name: str) -> str:
        """A new empty database for one run: what the service's `--db` is given."""
        ...

    def stored(self, target: str) -> int:
        """Station messages stored in `target` so far."""
        ...

    def server_cpu_s(self) -> float | None:
        """User + system CPU seconds the database server has used so far (None: no server,
        the database runs inside the service)."""
        ...

    def stop(self) -> None: ...


class SqliteStore:
    """A SQLite file per run in `workdir`, counted read-only from the bench's process."""

    name = "sqlite"
    poll_s = 0.01

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def new_database(self, name: str) -> str:
        return str(self.workdir / f"{name}.db")

    def stored(self, target: str) -> int:
        try:
            with sqlite3.connect(f"file:{target}?mode=ro", uri=True) as conn:
                return int(conn.execute("SELECT count(*) FROM station_samples").fetchone()[0])
        except sqlite3.OperationalError:  # not made yet (the service migrates it at start)
            return 0

    def server_cpu_s(self) -> float | None:
        return None

    def stop(self) -> None:
        return None


class PostgresStore:
    """A private PostgreSQL (initdb on a free port in a temporary directory, never the
    machine's own), a fresh database per run. The bench's own counting connection runs in a
    backend of that server; its CPU is left out of the server's."""

    name = "postgresql"
    poll_s = 0.05

    def __init__(self) -> None:
        self.server = PrivatePostgres().start()
        self._counting: dict[str, psycopg.Connection[tuple[int]]] = {}
        self._own_backends: set[int] = set()

    def new_database(self, name: str) -> str:
        # one run at a time counts: an older run's connection is closed now, not during a
        # later measurement (its backend's CPU then goes to the postmaster's reaped children)
        self._close_counting()
        return self.server.fresh_database(name.lower().replace("-", "_"))

    def stored(self, target: str) -> int:
        conn = self._counting.get(target)
        if conn is None:
            conn = psycopg.connect(target, autocommit=True)
            self._counting[target] = conn
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert backend is not None
            self._own_backends.add(int(backend[0]))
        try:
            row = conn.execute("SELECT count(*) FROM station_samples").fetchone()
        except psycopg.errors.UndefinedTable:  # the service migrates it at start
            return 0
        assert row is not None
        return int(row[0])

    def server_cpu_s(self) -> float | None:
        """The postmaster's CPU with its reaped children's, and every live child's (backends,
        WAL writer, checkpointer, autovacuum), but the bench's counting backends."""
        assert self.server.process is not None
        postmaster = self.server.process.pid
        # A backend that is ending shows no CPU (its /proc/<pid>/stat as a zombie, seen here:
        # a run's whole server CPU missing) until the postmaster has reaped it and added its
        # CPU to its children's: read when no child is ending and none ended meanwhile.
        deadline = time.monotonic() + REAP_WAIT_S
        while True:
            children = {pid: _state(pid) for pid in _children(postmaster)}
            if "Z" not in children.values():
                total = _cpu_ticks(postmaster, with_children=True)
                for pid in children:
                    if pid not in self._own_backends:
                        total += _cpu_ticks(pid, with_children=True)
                time.sleep(SETTLE_S)
                if set(_children(postmaster)) >= set(children):
                    return total / _TICKS_PER_S
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL's backends did not settle in {REAP_WAIT_S} s")
            time.sleep(SETTLE_S)

    def _close_counting(self) -> None:
        for conn in self._counting.values():
            conn.close()
        self._counting.clear()

    def stop(self) -> None:
        self._close_counting()
        self.server.stop()


def open_store(name: str, workdir: Path) -> Store:
    """The store called `name` (one of STORES), started."""
    if name == "postgresql":
        return PostgresStore()
    return SqliteStore(workdir)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command's name (field 3 first); None if the
    process has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()


def _state(pid: int) -> str | None:
    """R, S, Z…: field 3 of /proc/<pid>/stat (None: gone)."""
    fields = _stat(pid)
    return None if fields is None else fields[0]


def _cpu_ticks(pid: int, *, with_children: bool) -> int:
    """utime + stime (fields 14, 15), and with `with_children` cutime + cstime (16, 17): the
    CPU of children it has waited for, as the postmaster waits for every backend that ends."""
    fields = _stat(pid)
    if fields is None:
        return 0
    own = int(fields[11]) + int(fields[12])
    return own + (int(fields[13]) + int(fields[14]) if with_children else 0)


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == parent:
                found.append(int(entry.name))
    return found
