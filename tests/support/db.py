"""Reading the service's database from outside, as an operator would."""

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import psycopg

from facilities.store.sql import is_postgres, sqlite_path, to_postgres


def query(db: str | Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    """The rows of `sql` (SQLite's dialect, as the store writes it), read-only, from a SQLite
    file or a PostgreSQL database."""
    if is_postgres(str(db)):
        with psycopg.connect(str(db), autocommit=True) as conn:
            conn.read_only = True
            return conn.execute(to_postgres(sql), params).fetchall()  # type: ignore[arg-type]
    with sqlite3.connect(f"file:{sqlite_path(str(db))}?mode=ro", uri=True) as conn:
        return conn.execute(sql, params).fetchall()


class _Writable(Protocol):
    def execute(self, sql: str, params: Sequence[object] = ()) -> object: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> object: ...


class _PgWriter:
    """A PostgreSQL connection taking SQLite's statements, as the store's does."""

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> object:
        return self._conn.execute(to_postgres(sql), params)  # type: ignore[arg-type]

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> object:
        with self._conn.cursor() as cursor:
            cursor.executemany(to_postgres(sql), rows)  # type: ignore[arg-type]
        return None


@contextlib.contextmanager
def writing(db: str | Path, *, timeout: float = 10.0) -> Iterator[_Writable]:
    """A connection of an operator's, writing to the service's database (SQLite's dialect
    either way), committed at the end."""
    if is_postgres(str(db)):
        with psycopg.connect(str(db), cursor_factory=psycopg.ClientCursor) as conn:
            yield _PgWriter(conn)
        return
    with sqlite3.connect(sqlite_path(str(db)), timeout=timeout) as lite:
        yield lite
