"""Open the database: SQLite's pragmas and migrations by PRAGMA user_version, or PostgreSQL's
migrations by its version table (docs/postgresql.md)."""

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import aiosqlite

from facilities.errors import StoreError
from facilities.store.sql import (
    ERRORS,
    Connection,
    Params,
    PgConnection,
    is_postgres,
    shown,
    sqlite_path,
)

log = logging.getLogger(__name__)

# A writer waits this long for another connection's lock (the CLI adding a resident while the
# service ingests) before failing; 5 s is far above any batch commit measured here.
BUSY_TIMEOUT_MS = 5000

# Tries at start on a new file's "database is locked" (`_set_up`), the waits growing by this.
_START_TRIES = 8
_START_RETRY_S = 0.05

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

# The database holds residents' names, client addresses and token hashes: its files are the
# service's user's alone, whatever the umask (docs/operations.md, "Database"). SQLite gives
# the WAL, its index and a rollback journal the mode of the database file.
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
_COMPANIONS = ("", "-wal", "-shm", "-journal")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


# PostgreSQL's migrations, kept equal to SQLite's by a test (tests/test_postgres_store.py):
# its first brings a new database to SQLite's version 13 at once.
PG_MIGRATIONS = "migrations_pg"
# Held (pg_advisory_xact_lock) while one instance migrates: others starting at once wait.
_PG_MIGRATION_LOCK = 0x66616331  # "fac1"


def migrations(directory: str = "migrations") -> list[Migration]:
    """The numbered SQL files shipped in `store/<directory>`, in order."""
    found = []
    for entry in resources.files("facilities.store").joinpath(directory).iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    return found


async def open_db(target: str | Path) -> Connection:
    """Open (creating if needed) and migrate the database `target` names: a SQLite file
    (a path or `sqlite:///path`) or a PostgreSQL database (`postgresql://…`)."""
    return await _prepare(_unopened(target), str(target))


def _unopened(target: str | Path) -> Connection:
    """A connection to `target` that connects when it is first awaited (`_prepare`)."""
    if is_postgres(str(target)):
        return PgConnection(str(target))
    return aiosqlite.connect(sqlite_path(str(target)), isolation_level=None)


async def _prepare(conn: Connection, target: str) -> Connection:
    """Connect `conn` (made by `_unopened`), configure it and migrate the database."""
    if isinstance(conn, PgConnection):
        return await _prepare_pg(conn, target)
    assert isinstance(conn, aiosqlite.Connection)
    path = Path(sqlite_path(target))
    try:
        _private_files(path)
        await conn
    except OSError as exc:
        raise StoreError(f"cannot open database {path}: {exc.strerror or exc}") from None
    except aiosqlite.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from None
    try:
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await _set_up(conn, path)
    except aiosqlite.Error as exc:
        await conn.close()
        raise StoreError(f"cannot use database {path}: {exc}") from None
    except BaseException:
        await conn.close()
        raise
    return conn


async def _set_up(conn: aiosqlite.Connection, path: Path) -> None:
    """Check, configure and migrate. On a new file several instances starting at once meet
    in its first moments, before WAL is set, where SQLite answers a lock it would deadlock
    on with "database is locked" at once instead of waiting the busy timeout: each tries
    again, a few times, after the others' step."""
    for attempt in range(_START_TRIES):
        try:
            await _not_newer(conn, path)
            await _configure(conn)
            await migrate(conn)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _START_TRIES - 1:
                raise
            await asyncio.sleep(_START_RETRY_S * (attempt + 1))


async def _prepare_pg(conn: PgConnection, url: str) -> Connection:
    try:
        await conn.open()
    except ERRORS as exc:
        raise StoreError(f"cannot open database {shown(url)}: {_first_line(exc)}") from None
    try:
        await _not_newer_than(await _pg_version(conn), shown(url), PG_MIGRATIONS)
        await migrate_pg(conn)
    except ERRORS as exc:
        await conn.close()
        raise StoreError(f"cannot use database {shown(url)}: {_first_line(exc)}") from None
    except BaseException:
        await conn.close()
        raise
    return conn


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


async def _not_newer(conn: aiosqlite.Connection, path: Path) -> None:
    await _not_newer_than(await _user_version(conn), str(path), "migrations")


async def _not_newer_than(found: int, where: str, directory: str) -> None:
    """Refuse, before changing anything, a database a newer version migrated: this version
    does not know its tables (docs/operations.md, "Upgrades")."""
    newest = migrations(directory)[-1].version
    if found > newest:
        raise StoreError(
            f"database {where} is from a newer version of facilities (schema version {found};"
            f" this version knows up to {newest}): run the newer version, or restore a backup"
            " made by this one"
        )


async def _user_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


class Store:
    """The service's three connections to its database, each for one user: ingest's batches,
    the shared writer (rules, commands, requests, retention: never inside a batch) and the
    reader (the HTTP API; WAL lets it read while ingest writes). Made with nothing opened,
    so that the service is wired before it runs; `open` connects them, `close` closes them."""

    def __init__(self, target: str | Path) -> None:
        self.target = str(target)
        self.postgres = is_postgres(self.target)
        self.ingest = _unopened(target)
        self.writer = SharedWriter(_unopened(target))
        self.reader = _unopened(target)

    async def open(self) -> None:
        """Create and migrate the database (on the first connection), then open the others."""
        opened = []
        try:
            for conn in (self.ingest, self.writer.conn, self.reader):
                opened.append(await _prepare(conn, self.target))
        except BaseException:
            for conn in opened:
                await conn.close()
            raise

    async def close(self) -> None:
        for conn in (self.reader, self.writer.conn, self.ingest):
            await conn.close()


def _private_files(path: Path) -> None:
    """Create the database file (and a missing directory) for this user only; take group and
    other access away from the files an earlier version or a wider umask left."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    for suffix in _COMPANIONS:
        name = f"{path}{suffix}"
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(os.stat(name).st_mode)
            if mode & 0o077:
                os.chmod(name, mode & ~0o077)
                log.warning(
                    "%s was open to other users (mode 0%o): set to 0%o", name, mode, mode & ~0o077
                )


async def _configure(conn: aiosqlite.Connection) -> None:
    await conn.execute("PRAGMA journal_mode = WAL")
    # FULL: a batch is acknowledged to the broker only after its commit, so the commit must
    # survive a power cut too, not just a crash of this process. Batching makes it cheap.
    await conn.execute("PRAGMA synchronous = FULL")
    await conn.execute("PRAGMA foreign_keys = ON")


def statements(sql: str) -> Iterator[str]:
    """The statements of a migration, one at a time (a `;` inside a string or a comment
    does not end one): `migrate` runs them inside a transaction it holds, which
    `executescript` would commit first."""
    pending = ""
    for piece in sql.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if _has_code(pending):
                yield pending
            pending = ""
    if _has_code(pending[:-1]):  # the last piece gained a ";" it did not have
        raise ValueError(f"a migration ends inside a statement: {pending[:-1].strip()!r}")


def _has_code(text: str) -> bool:
    lines = (line.split("--", 1)[0] for line in text.splitlines())
    return any(line.strip(" \t;") for line in lines)


async def _pg_version(conn: PgConnection) -> int:
    async with conn.execute("SELECT to_regclass('facilities_schema') IS NOT NULL") as cursor:
        row = await cursor.fetchone()
    if not row or not row[0]:
        return 0
    async with conn.execute("SELECT version FROM facilities_schema") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def migrate_pg(conn: PgConnection) -> int:
    """Apply every PostgreSQL migration newer than the database's version; return the
    version. Each in a transaction that holds an advisory lock while it looks at the
    version again: another instance may be migrating the same database."""
    current = await _pg_version(conn)
    for migration in migrations(PG_MIGRATIONS):
        if migration.version <= current:
            continue
        await conn.execute("BEGIN")
        try:
            await conn.execute("SELECT pg_advisory_xact_lock(?)", (_PG_MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS facilities_schema (version BIGINT NOT NULL)"
            )
            current = await _pg_version(conn)
            if migration.version > current:
                log.info("applying migration %s", migration.name)
                await conn.run_script(migration.sql)
                await conn.execute("DELETE FROM facilities_schema")
                await conn.execute(
                    "INSERT INTO facilities_schema (version) VALUES (?)", (migration.version,)
                )
                current = migration.version
            await conn.commit()
        except BaseException:
            await asyncio.shield(conn.rollback())
            raise
    return current


async def migrate(conn: aiosqlite.Connection) -> int:
    """Apply every migration newer than the database's user_version; return the version.
    Each in a transaction that holds the write lock before it looks at the version again:
    another process may be migrating the same file (several instances started at once)."""
    current = await _user_version(conn)
    for migration in migrations():
        if migration.version <= current:
            continue
        await conn.execute("BEGIN IMMEDIATE")
        try:
            current = await _user_version(conn)
            if migration.version > current:
                log.info("applying migration %s", migration.name)
                for statement in statements(migration.sql):
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {migration.version}")
                current = migration.version
            await conn.execute("COMMIT")
        except BaseException:
            await asyncio.shield(conn.execute("ROLLBACK"))
            raise
    return current


class SharedWriter:
    """One connection that several tasks write through: one transaction at a time, so that
    one task's statements never land in (or commit, or roll back) another's transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = asyncio.Lock()
        # A read between another task's statements would run inside its transaction: on
        # SQLite harmless (WAL), on PostgreSQL refused once that transaction has failed.
        self.postgres = isinstance(conn, PgConnection)

    async def read(self, sql: str, params: Params) -> list[tuple[object, ...]]:
        """The rows of `sql`, read on this connection outside any transaction of another
        task's, in one call."""
        if self.postgres:
            async with self._lock:
                rows = await self.conn.execute_fetchall(sql, params)
        else:
            rows = await self.conn.execute_fetchall(sql, params)
        return [tuple(row) for row in rows]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._lock:
            try:
                await self.conn.execute("BEGIN IMMEDIATE")
                yield self.conn
                await self.conn.commit()
            except BaseException:
                # Also when cancelled mid-way: aiosqlite runs its calls in order on its own
                # thread, so this rollback comes after whatever was already queued (even a
                # BEGIN whose await was cancelled) and before the next transaction.
                await asyncio.shield(self.conn.rollback())
                raise


async def ping(conn: Connection) -> None:
    """One trivial query: raises if the database does not answer (for /healthz)."""
    await conn.execute("SELECT 1")
