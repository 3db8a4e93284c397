"""Reading the service's database from outside, as an operator would."""

import sqlite3
from pathlib import Path

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
