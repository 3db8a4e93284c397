"""What the store asks of a database connection, and PostgreSQL's connection that answers it.

The store is written against SQLite (aiosqlite); the same statements run on PostgreSQL
(psycopg 3) through `PgConnection`, which rewrites the few places where SQLite's dialect
differs (`to_postgres`) and converts values PostgreSQL would refuse (docs/postgresql.md).
"""

import functools
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Generator, Iterable, Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import Any, Protocol

import aiosqlite
import psycopg
import psycopg.adapt
from psycopg.pq import TransactionStatus

Params = Sequence[Any] | Mapping[str, Any]

log = logging.getLogger(__name__)


class Cursor(Protocol):
    """A statement's result: its rows, fetched already, and how many rows it changed."""

    @property
    def rowcount(self) -> int: ...

    async def fetchone(self) -> Any: ...

    async def fetchall(self) -> Iterable[Any]: ...

    def __aiter__(self) -> AsyncIterator[Any]: ...


class CursorResult(Protocol):
    """What `execute` gives: awaited, or used with `async with`, it is the cursor."""

    def __await__(self) -> Generator[Any, None, Cursor]: ...

    async def __aenter__(self) -> Cursor: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...


class Connection(Protocol):
    """The calls the store makes on a connection (aiosqlite's, or `PgConnection`). Both run
    in autocommit: a transaction is the `BEGIN IMMEDIATE … COMMIT` the store writes."""

    def execute(self, sql: str, parameters: Params | None = None) -> CursorResult: ...

    async def executemany(self, sql: str, parameters: Iterable[Params]) -> Cursor: ...

    async def execute_fetchall(
        self, sql: str, parameters: Params | None = None
    ) -> Iterable[Any]: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    async def close(self) -> None: ...


# What a database raises when it, not a message, is at fault (locked, gone, disk full).
ERRORS: tuple[type[Exception], ...] = (aiosqlite.Error, psycopg.Error)
# What it raises for the data of one row (a constraint, a value too big or of the wrong type).
DATA_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    psycopg.IntegrityError,
    psycopg.DataError,
)


def is_postgres(target: str) -> bool:
    """Whether the `--db` value names a PostgreSQL database (a `postgresql://` URL)."""
    return target.startswith(("postgresql://", "postgres://"))


def sqlite_path(target: str) -> str:
    """The file of a SQLite `--db` value: a path, or a `sqlite:///path` URL."""
    return target.removeprefix("sqlite://") if target.startswith("sqlite:///") else target


def shown(target: str) -> str:
    """`target` as logs and errors show it: a URL's password replaced by `***`."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", target)


# --- SQLite's dialect, as PostgreSQL needs it ------------------------------------------------

_TOKENS = re.compile(
    r"""
    (?P<string>'(?:[^']|'')*')            # a string literal: left as it is
    | (?P<quoted>"(?:[^"]|"")*")          # a quoted name
    | (?P<comment>--[^\n]*)
    | (?P<positional>\?)
    | (?P<named>(?<!:):(?P<name>[A-Za-z_]\w*))
    | (?P<percent>%)
    """,
    re.VERBOSE,
)
_INSERT_OR_IGNORE = re.compile(r"^\s*INSERT OR IGNORE INTO", re.IGNORECASE)
_SCALAR_MINMAX = re.compile(r"\b(max|min)\(\s*([\w.?:]+)\s*,\s*([\w.?:]+)\s*\)", re.I)
_BLOB = re.compile(r"(?<![\w'])[xX]'([0-9A-Fa-f]*)'")
_INDEXED_BY = re.compile(r"\s+(?:INDEXED BY \w+|NOT INDEXED)\b", re.IGNORECASE)
_CAST_INTEGER = re.compile(r"CAST\(([^()]*?) AS INTEGER\)", re.IGNORECASE)
_FUNCTIONS = (
    # SQLite's table of a JSON array's values, `value` its column: PostgreSQL's has the same.
    (re.compile(r"json_each\((%s|%\(\w+\)s)\)"), r"json_array_elements_text(\1::json)"),
    # A time of day to the millisecond, in UTC, from Unix seconds.
    (
        re.compile(r"strftime\('%%H:%%M:%%fZ', ([\w.]+|%s|%\(\w+\)s), 'unixepoch'\)"),
        r"""to_char(to_timestamp(\1) AT TIME ZONE 'UTC', 'HH24:MI:SS.MS"Z"')""",
    ),
)


@functools.lru_cache(maxsize=512)
def to_postgres(sql: str) -> str:
    """SQLite's `sql` as PostgreSQL runs it: `?` and `:name` parameters in psycopg's style,
    `INSERT OR IGNORE` as `ON CONFLICT DO NOTHING`, `BEGIN IMMEDIATE` as `BEGIN` (the first
    write takes its row locks), SQLite's index hints left out, the scalar `max(a, b)` as
    `GREATEST`, a cast to an integer truncating as SQLite's does (PostgreSQL's rounds), and
    SQLite's JSON and date functions by PostgreSQL's, a blob `x'…'` decoded from hex. Only
    what the store uses: tests run them on both (tests/test_postgres_store.py)."""
    if sql.strip().upper() == "BEGIN IMMEDIATE":
        return "BEGIN"

    def replace(match: re.Match[str]) -> str:
        if match.group("positional"):
            return "%s"
        if match.group("named"):
            return f"%({match.group('name')})s"
        # psycopg reads every `%` as its own, inside a string too
        return match.group(0).replace("%", "%%")

    text = _CAST_INTEGER.sub(r"CAST(TRUNC(\1) AS BIGINT)", sql)
    text = _SCALAR_MINMAX.sub(_greatest_or_least, text)
    text = _BLOB.sub(r"decode('\1', 'hex')", text)
    text = _TOKENS.sub(replace, text)
    if _INSERT_OR_IGNORE.match(text):
        text = _INSERT_OR_IGNORE.sub("INSERT INTO", text, count=1).rstrip().rstrip(";")
        text += " ON CONFLICT DO NOTHING"
    text = _INDEXED_BY.sub("", text)  # SQLite's index hints: PostgreSQL's planner chooses
    for pattern, replacement in _FUNCTIONS:
        text = pattern.sub(replacement, text)
    return text


def _greatest_or_least(match: re.Match[str]) -> str:
    function = "GREATEST" if match.group(1).lower() == "max" else "LEAST"
    return f"{function}({match.group(2)}, {match.group(3)})"


def _value(value: Any) -> Any:
    # SQLite stores a bool as 0 or 1 in an INTEGER column; PostgreSQL refuses a boolean there.
    return int(value) if type(value) is bool else value


def _values(params: Params | None) -> Params | None:
    if params is None:
        return None
    if isinstance(params, Mapping):
        return {key: _value(value) for key, value in params.items()}
    return [_value(value) for value in params]


class _NumericLoader(psycopg.adapt.Loader):
    """`numeric` (a SUM or AVG of integers) as SQLite gives it: an int when whole, else a
    float; the store does arithmetic with floats, never with Decimal."""

    def load(self, data: Any) -> int | float:
        number = Decimal(bytes(data).decode())
        return int(number) if number == number.to_integral_value() else float(number)


class PgCursor:
    """A PostgreSQL result with the rows already fetched, as `Cursor` says."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self._rowcount = rowcount

    @property
    def rowcount(self) -> int:
        return self._rowcount

    async def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    async def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    async def __aiter__(self) -> AsyncIterator[tuple[Any, ...]]:
        for row in await self.fetchall():
            yield row


class _Result:
    """`execute`'s answer: awaitable, and usable with `async with`, as aiosqlite's is."""

    def __init__(self, pending: Awaitable[PgCursor]) -> None:
        self._pending = pending

    def __await__(self) -> Generator[Any, None, PgCursor]:
        return self._pending.__await__()

    async def __aenter__(self) -> PgCursor:
        return await self._pending

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class PgConnection:
    """A psycopg connection that runs the store's SQLite statements (`to_postgres`).
    Made unconnected, as aiosqlite's are, so that the service is wired before it runs;
    `open` connects. Autocommit, as the store's SQLite connections are: the store begins
    and commits. A connection the server dropped (a restart, a failover) is made again at
    the next statement that does not continue a transaction: the writer whose statement
    failed tried its whole transaction again (docs/reliability.md)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._opened: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._closed = False
        self._begun = False  # a BEGIN sent and no COMMIT or ROLLBACK since

    async def open(self) -> None:
        # Parameters bound in the client: the store's SQLite statements test a parameter for
        # NULL (`:port IS NULL OR port = :port`), whose type the server cannot tell.
        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, cursor_factory=psycopg.AsyncClientCursor
        )
        conn.adapters.register_loader("numeric", _NumericLoader)
        self._opened, self._closed, self._begun = conn, False, False

    async def _ready(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        if self._opened is None or self._closed:
            raise psycopg.OperationalError(f"not connected to {shown(self.url)}")
        if self._opened.closed and not self._begun:
            log.warning("connecting again to %s (the connection was lost)", shown(self.url))
            await self.open()
        return self._opened

    def execute(self, sql: str, parameters: Params | None = None) -> _Result:
        return _Result(self._execute(sql, parameters))

    async def _execute(self, sql: str, parameters: Params | None) -> PgCursor:
        statement = to_postgres(sql)
        conn = await self._ready()
        async with conn.cursor() as cursor:
            # () rather than None: psycopg reads `%%` as `%` only when given parameters
            await cursor.execute(statement, _values(parameters) or ())
            if statement == "BEGIN":
                self._begun = True
            rows = await cursor.fetchall() if cursor.description is not None else []
            return PgCursor(rows, cursor.rowcount)

    async def execute_fetchall(self, sql: str, parameters: Params | None = None) -> list[Any]:
        return await (await self._execute(sql, parameters)).fetchall()

    async def executemany(self, sql: str, parameters: Iterable[Params]) -> PgCursor:
        rows = [_values(params) or () for params in parameters]
        # Bound on the server, unlike `execute`'s: the store's batches of INSERTs, whose
        # columns give every parameter its type; prepared once their text repeats (client
        # binding sent each 500-row INSERT as ~52 KB of SQL to parse and plan:
        # docs/performance.md, "PostgreSQL as the store").
        async with psycopg.AsyncCursor(await self._ready()) as cursor:
            await cursor.executemany(to_postgres(sql), rows)
            return PgCursor([], cursor.rowcount)

    async def run_script(self, sql: str) -> None:
        """Run `sql` as written (a migration: PostgreSQL's own, several statements)."""
        await (await self._ready()).execute(sql.encode())

    async def commit(self) -> None:
        """COMMIT; raise if the transaction failed instead. PostgreSQL answers the COMMIT of a
        transaction that a statement failed in (another task's on this connection: the
        /healthz ping cancelled by its timeout) with ROLLBACK, not an error: taken as done,
        the batch it held would be acknowledged and never stored."""
        conn = await self._ready()
        self._begun = False
        status = conn.info.transaction_status
        if status == TransactionStatus.IDLE:
            return
        if status == TransactionStatus.INERROR:
            await conn.execute("ROLLBACK")
            raise psycopg.errors.InFailedSqlTransaction(
                "the transaction failed before its COMMIT: rolled back"
            )
        cursor = await conn.execute("COMMIT")
        if cursor.statusmessage != "COMMIT":
            raise psycopg.errors.InFailedSqlTransaction(
                f"COMMIT answered {cursor.statusmessage!r}: the transaction was rolled back"
            )

    async def rollback(self) -> None:
        self._begun = False
        conn = self._opened
        idle = conn is None or conn.closed or conn.info.transaction_status == TransactionStatus.IDLE
        if conn is not None and not idle:
            await conn.execute("ROLLBACK")

    async def close(self) -> None:
        self._closed = True
        if self._opened is not None:
            await self._opened.close()
