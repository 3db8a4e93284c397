"""Reading the service's database from outside, as an operator would."""

import sqlite3
from pathlib import Path


def query(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    """The rows of `sql`, read-only."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(sql, params).fetchall()
