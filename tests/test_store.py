"""The SQLite store: pragmas, migrations, strict tables, indexes for the API's queries."""

import asyncio
import sqlite3
from pathlib import Path

import pytest

from facilities.store import history
from facilities.store.db import migrations, open_db, statements
from facilities.store.telemetry import CHUNK_SIZES, BatchRows, chunk_sizes, write_batch


async def test_open_migrates_once_and_sets_the_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    conn = await open_db(path)
    try:
        async with conn.execute("PRAGMA journal_mode") as cursor:
            assert (await cursor.fetchone()) == ("wal",)
        async with conn.execute("PRAGMA busy_timeout") as cursor:
            assert (await cursor.fetchone()) == (5000,)
        async with conn.execute("PRAGMA synchronous") as cursor:
            assert (await cursor.fetchone()) == (2,)  # FULL
    finally:
        await conn.close()
    again = await open_db(path)  # a second start applies nothing and keeps the data
    await again.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (migrations()[-1].version,)


async def test_two_processes_opening_a_new_database_at_once_both_start(tmp_path: Path) -> None:
    """Several instances share one database (bench/partitions.py): started together on a new
    file, each took the other's half-applied migration for its own to apply ("table alerts
    already exists"). Each connection here is its own thread, as each process would be."""
    path = tmp_path / "f.db"
    for _ in range(5):
        path.unlink(missing_ok=True)
        opened = await asyncio.gather(*(open_db(path) for _ in range(4)), return_exceptions=True)
        for conn in opened:
            if not isinstance(conn, BaseException):
                await conn.close()
        assert [c for c in opened if isinstance(c, BaseException)] == []
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA user_version").fetchone() == (migrations()[-1].version,)


def test_a_migration_splits_into_its_statements() -> None:
    sql = "CREATE TABLE a (x TEXT DEFAULT ';');\n-- a comment; with a semicolon\nCREATE INDEX b ON a (x);\n"
    assert [s.strip() for s in statements(sql)] == [
        "CREATE TABLE a (x TEXT DEFAULT ';');",
        "-- a comment; with a semicolon\nCREATE INDEX b ON a (x);",
    ]
    with pytest.raises(ValueError, match="ends inside a statement"):  # not cut short
        list(statements("CREATE TABLE t (x);\nCREATE TRIGGER g AFTER INSERT ON t BEGIN SELECT 1;"))
    for migration in migrations():  # each statement runs alone, as migrate runs them
        for statement in statements(migration.sql):
            assert sqlite3.complete_statement(statement)


def test_migrations_are_numbered_in_order() -> None:
    versions = [m.version for m in migrations()]
    assert versions == list(range(1, len(versions) + 1))


async def test_tables_are_strict(tmp_path: Path) -> None:
    conn = await open_db(tmp_path / "f.db")
    await conn.close()
    with sqlite3.connect(tmp_path / "f.db") as raw:
        tables = {
            row[0]: row[1]
            for row in raw.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'table'")
        }
        assert set(tables) >= {
            "station_samples",
            "port_samples",
            "charging_events",
            "garage_samples",
            "gate_events",
            "availability_changes",
            "quarantine",
        }
        assert all("STRICT" in sql for sql in tables.values())
        with pytest.raises(sqlite3.IntegrityError):
            raw.execute(
                "INSERT INTO station_samples VALUES ('cs-01', 'not a time', 1, 1.0, 1, 1, 0)"
            )


@pytest.mark.parametrize(
    ("query", "index"),
    [
        # one port's history: the key's (station, ts) range, the port filtered in it
        (
            "SELECT * FROM port_samples"
            " WHERE station = 'cs-01' AND port = 3 AND ts BETWEEN 1 AND 2",
            "PRIMARY KEY",
        ),
        (
            "SELECT * FROM station_samples WHERE station = 'cs-01' AND ts BETWEEN 1 AND 2",
            "PRIMARY KEY",
        ),
        (
            "SELECT * FROM port_samples WHERE station = 'cs-01' AND ts BETWEEN 1 AND 2",
            "PRIMARY KEY",
        ),
        (
            "SELECT * FROM gate_events WHERE garage = 'g-cq4' ORDER BY ts DESC LIMIT 10",
            "gate_events_by_garage",
        ),
    ],
)
async def test_the_api_queries_use_an_index(tmp_path: Path, query: str, index: str) -> None:
    conn = await open_db(tmp_path / "f.db")
    await conn.close()
    with sqlite3.connect(tmp_path / "f.db") as raw:
        plan = " ".join(str(row[-1]) for row in raw.execute(f"EXPLAIN QUERY PLAN {query}"))
    assert index in plan
    assert "SCAN" not in plan.replace("SCAN CONSTANT", "")


async def test_batches_of_every_size_use_a_bounded_set_of_statements(tmp_path: Path) -> None:
    """Every batch size is stored whole, with statements of a few fixed sizes only: the driver
    keeps each distinct statement text prepared, so one per batch size grew the writer's
    memory for hours in the soak (docs/reliability.md)."""
    conn = await open_db(tmp_path / "f.db")
    statements: set[str] = set()
    await conn.set_trace_callback(
        lambda sql: (
            statements.add(sql.split(" VALUES ")[0] + str(sql.count("(")))
            if sql.startswith("INSERT INTO availability_changes")
            else None
        )
    )
    try:
        total = 0
        for size in range(1, 700):
            batch = BatchRows()
            batch.tables["availability"] = [
                ("station", "cs-01", "online", float(total + n)) for n in range(size)
            ]
            await write_batch(conn, batch)
            total += size
        async with conn.execute("SELECT count(*) FROM availability_changes") as cursor:
            assert (await cursor.fetchone()) == (total,)
    finally:
        await conn.close()
    assert len(statements) == len(CHUNK_SIZES)
    for rows in range(2000):
        sizes = chunk_sizes(rows)
        assert sum(sizes) == rows and set(sizes) <= set(CHUNK_SIZES)


async def test_a_chart_s_buckets_read_the_key_s_range(tmp_path: Path) -> None:
    """The downsampled history (every port, or one) reads the primary key's (station, ts)
    range: port_samples has no other index since migration 013."""
    conn = await open_db(tmp_path / "f.db")
    await conn.close()
    with sqlite3.connect(tmp_path / "f.db") as raw:
        for port in (None, 3):
            params = {
                "station": "cs-01",
                "start": 1.0,
                "end": 2.0,
                "step": 300.0,
                "after_bucket": -1,
                "after_port": -1,
                "limit": 10,
                "port": port,
            }
            rows = raw.execute(f"EXPLAIN QUERY PLAN {history._BUCKETS}", params).fetchall()
            plan = " ".join(str(row[-1]) for row in rows)
            assert "SEARCH port_samples USING PRIMARY KEY (station=? AND ts>? AND ts<?)" in plan
