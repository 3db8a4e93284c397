"""What a stored message costs PostgreSQL and its client, without MQTT: the rows of N telemetry
messages written as the store writes them, and in other ways, each into a fresh database.

Run on demand (`.venv/bin/python bench/pg_insert.py --help`); never in `make test`. Starts a
private PostgreSQL (bench/stores.py) and writes N messages of `--ports` ports (one
station_samples row and a port_samples row per port each), 1,000 messages per transaction as
ingest commits them, in 500-row INSERTs as the store cuts them, one way per line:
  store        the store's own connection (facilities/store/sql.py: the SQLite statements
               rewritten, parameters bound in the client by psycopg's ClientCursor)
  server-bind  the same statements, parameters bound by the server (psycopg's default cursor)
  copy         COPY into the tables (no ON CONFLICT: the store's idempotency is not kept)
  store-async  as `store`, with `synchronous_commit = off` for the session: no wait for the
               WAL's flush at each commit (what the server's fsync costs the writer)
For each: messages per second, the bench process's CPU per message (the client's side: the
binding and the driver) and the server's (bench/stores.py's count), alternating the ways.
"""

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stores import PostgresStore  # noqa: E402
from facilities.store.db import open_db  # noqa: E402
from facilities.store.sql import PgConnection, to_postgres  # noqa: E402

# As ingest: a transaction per 1,000 messages (facilities/mqtt/ingest.py's batch), statements
# of 500 rows (facilities/store/telemetry.py's largest chunk).
BATCH_MESSAGES = 1000
CHUNK_ROWS = 500
STATION_COLUMNS = 7
PORT_COLUMNS = 11

Row = tuple[Any, ...]


def rows(messages: int, ports: int) -> tuple[list[Row], list[Row]]:
    """The station and port rows of `messages` ten-port-like messages over 20 stations."""
    t0 = time.time()
    stations: list[Row] = []
    port_rows: list[Row] = []
    for seq in range(messages):
        device, ts = f"cs-{seq % 20 + 1:02d}", t0 + seq * 0.001
        stations.append((device, ts, seq, ts, 31.5, 2.1, 0))
        port_rows += [
            (device, ts, seq, p, ts, "charging", 229.8, 1.42, 326.1, 512.4, 33.0)
            for p in range(1, ports + 1)
        ]
    return stations, port_rows


def insert_sql(table: str, columns: int, count: int) -> str:
    """The store's statement (SQLite's dialect) for `count` rows of `table`."""
    row = "(" + ", ".join("?" * columns) + ")"
    prefix = f"INSERT OR IGNORE INTO {table} VALUES "  # noqa: S608 (fixed names)
    return prefix + ", ".join([row] * count)


Statements = list[tuple[str, list[list[Any]]]]


def transactions(stations: list[Row], ports: list[Row]) -> list[Statements]:
    """Per transaction of BATCH_MESSAGES messages, its statements as the store sends them: per
    table and statement size, one `executemany` of the chunks' flat parameters."""
    per_message = len(ports) // len(stations)
    out = []
    for start in range(0, len(stations), BATCH_MESSAGES):
        statements: Statements = []
        for table, columns, table_rows in (
            ("station_samples", STATION_COLUMNS, stations[start : start + BATCH_MESSAGES]),
            (
                "port_samples",
                PORT_COLUMNS,
                ports[start * per_message : (start + BATCH_MESSAGES) * per_message],
            ),
        ):
            by_size: dict[int, list[list[Any]]] = {}
            for first in range(0, len(table_rows), CHUNK_ROWS):
                part = table_rows[first : first + CHUNK_ROWS]
                by_size.setdefault(len(part), []).append([v for row in part for v in row])
            statements += [
                (insert_sql(table, columns, size), params) for size, params in by_size.items()
            ]
        out.append(statements)
    return out


Writer = Callable[[str, list[Row], list[Row]], Awaitable[None]]


async def via_store(url: str, stations: list[Row], ports: list[Row], *, sync: bool) -> None:
    conn = PgConnection(url)
    await conn.open()
    try:
        if not sync:
            await conn.execute("SET synchronous_commit = off")
        for statements in transactions(stations, ports):
            await conn.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                await conn.executemany(sql, params)
            await conn.commit()
    finally:
        await conn.close()


async def server_bind(url: str, stations: list[Row], ports: list[Row]) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for statements in transactions(stations, ports):
            async with conn.transaction(), conn.cursor() as cursor:
                for sql, params in statements:
                    await cursor.executemany(to_postgres(sql).encode(), params)


async def copy(url: str, stations: list[Row], ports: list[Row]) -> None:
    per_message = len(ports) // len(stations)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for start in range(0, len(stations), BATCH_MESSAGES):
            async with conn.transaction(), conn.cursor() as cursor:
                for table, table_rows in (
                    ("station_samples", stations[start : start + BATCH_MESSAGES]),
                    (
                        "port_samples",
                        ports[start * per_message : (start + BATCH_MESSAGES) * per_message],
                    ),
                ):
                    async with cursor.copy(f"COPY {table} FROM STDIN".encode()) as out:
                        for row in table_rows:
                            await out.write_row(row)


WAYS: dict[str, Writer] = {
    "store": lambda url, s, p: via_store(url, s, p, sync=True),
    "server-bind": server_bind,
    "copy": copy,
    "store-async": lambda url, s, p: via_store(url, s, p, sync=False),
}


async def measure(
    store: PostgresStore, way: str, run: int, data: tuple[list[Row], list[Row]]
) -> str:
    url = store.new_database(f"insert-{way}-{run}")
    await (await open_db(url)).close()  # the schema, by the store's own migrations
    stations, ports = data
    server = store.server_cpu_s()  # first: its reading takes the bench's CPU and time
    started, client = time.perf_counter(), time.process_time()
    await WAYS[way](url, stations, ports)
    elapsed = time.perf_counter() - started
    client_us = (time.process_time() - client) / len(stations) * 1e6
    server_s = store.server_cpu_s()
    assert server is not None
    assert server_s is not None
    server_us = (server_s - server) / len(stations) * 1e6
    stored = store.stored(url)
    assert stored == len(stations), f"{way}: {stored} of {len(stations)} stored"
    return (
        f"{way:>12} {len(stations) / elapsed:>9.0f} {client_us:>11.1f} {server_us:>11.1f}"
        f" {client_us + server_us:>9.1f}"
    )


async def main_async(args: argparse.Namespace) -> None:
    store = PostgresStore()
    try:
        data = rows(args.messages, args.ports)
        print(
            f"{args.messages} messages of {args.ports} ports, {BATCH_MESSAGES} per transaction;"
            f" PostgreSQL on port {store.server.port}"
        )
        print(f"{'way':>12} {'msg/s':>9} {'client us':>11} {'server us':>11} {'total us':>9}")
        for run in range(args.repeat):
            for way in args.ways:
                print(await measure(store, way, run, data), flush=True)
    finally:
        store.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--ports", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--ways", nargs="+", choices=tuple(WAYS), default=list(WAYS))
    args = parser.parse_args()
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
