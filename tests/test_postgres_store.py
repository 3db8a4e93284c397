"""PostgreSQL as the store: its schema equals SQLite's, SQLite's statements run on it as
`to_postgres` rewrites them, migrations are taken once by one of several instances."""

import asyncio
import json
import sqlite3
from pathlib import Path

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from facilities.errors import StoreError
from facilities.metrics import IngestMetrics
from facilities.service import run
from facilities.settings import Settings
from facilities.site import Site
from facilities.store import partitions
from facilities.store.db import PG_MIGRATIONS, Store, migrations, open_db
from facilities.store.retention import Policy, Retention
from facilities.store.sql import PgConnection, shown, to_postgres
from facilities.store.telemetry import BatchRows, write_batch
from facilities.wiring import build
from tests.support import payloads
from tests.support.db import query
from tests.support.devices import DeviceFactory, Devices
from tests.support.poll import wait_for
from tests.support.postgres import PrivatePostgres

_TYPES = {"TEXT": "text", "REAL": "double precision", "INTEGER": "bigint", "BLOB": "bytea"}

Column = tuple[str, str, bool, str | None]  # name, type, not null, default
Key = tuple[bool, tuple[str, ...]]  # unique, columns


def _sqlite_schema(path: Path) -> dict[str, tuple[list[Column], set[Key], set[str]]]:
    """Each table: its columns in order, its keys and indexes (unique?, columns), and the
    names of the indexes made by CREATE INDEX."""
    schema = {}
    with sqlite3.connect(path) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        for table in tables:
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            columns = [
                (name, _TYPES[kind], bool(notnull), default)
                for _, name, kind, notnull, default, _ in info
            ]
            primary = tuple(name for _, name, _, _, _, pk in sorted(info, key=lambda c: c[5]) if pk)
            keys = {(True, primary)} if primary else set()
            named = set()
            for _, index, unique, origin, _ in conn.execute(f"PRAGMA index_list({table})"):
                cols = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({index})"))
                keys.add((bool(unique), cols))
                if origin == "c":
                    named.add(index)
            rowid = not conn.execute(
                "SELECT sql LIKE '%WITHOUT ROWID%' FROM sqlite_schema WHERE name = ?", (table,)
            ).fetchone()[0]
            if rowid:  # PostgreSQL's rowid column, which the store reads as SQLite's
                columns.append(("rowid", "bigint", False, None))
            schema[table] = (columns, keys, named)
    return schema


def _pg_schema(url: str) -> dict[str, tuple[list[Column], set[Key], set[str]]]:
    schema = {}
    with psycopg.connect(url) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p')"
                " AND relnamespace = 'public'::regnamespace AND NOT relispartition"
                " AND relname != 'facilities_schema' ORDER BY relname"
            )
        ]
        for table in tables:
            columns: list[Column] = []
            for name, kind, nullable, default, generated in conn.execute(
                "SELECT column_name, data_type, is_nullable, column_default, is_generated"
                " FROM information_schema.columns WHERE table_name = %s"
                " ORDER BY ordinal_position",
                (table,),
            ):
                if name == "rowid":
                    columns.append(("rowid", kind, False, None))
                    continue
                identity = generated == "ALWAYS" or (default is None and name == "id")
                columns.append(
                    (name, kind, nullable == "NO" and not _is_pk_id(table, name, conn), None)
                    if identity
                    else (name, kind, nullable == "NO", _default(default))
                )
            keys: set[Key] = set()
            named = set()
            for index, unique, primary, cols, by_constraint in conn.execute(
                "SELECT c.relname, i.indisunique, i.indisprimary,"
                " array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(n, o)"
                "       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n"
                "       ORDER BY k.o),"
                " EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = i.indexrelid)"
                " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE i.indrelid = %s::regclass",
                (table,),
            ):
                if cols == ["rowid"]:
                    continue
                keys.add((unique, tuple(cols)))
                if not by_constraint and not primary:
                    named.add(index)
            schema[table] = (columns, keys, named)
    return schema


def _is_pk_id(table: str, name: str, conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    # SQLite's `id INTEGER PRIMARY KEY` is the rowid: its table_info says it may be null
    return name == "id" and bool(
        conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = %s"
            " AND column_name = 'id' AND is_identity = 'YES'",
            (table,),
        ).fetchone()
    )


def _default(default: str | None) -> str | None:
    # PostgreSQL writes '' as ''::text
    return default.split("::")[0] if default else None


async def test_the_postgresql_schema_equals_sqlites(tmp_path: Path, empty_pg_url: str) -> None:
    sqlite_db = tmp_path / "f.db"
    for target in (str(sqlite_db), empty_pg_url):
        conn = await open_db(target)
        await conn.close()
    sqlite, postgres = _sqlite_schema(sqlite_db), _pg_schema(empty_pg_url)
    assert sorted(postgres) == sorted(sqlite)
    for table, (columns, keys, named) in sqlite.items():
        assert postgres[table][0] == columns, table
        assert postgres[table][1] == keys, table
        assert postgres[table][2] == named, table
    # the same migrations, to the same version: a new one needs a file for each
    assert migrations(PG_MIGRATIONS)[-1].version == migrations()[-1].version


async def test_several_instances_opening_a_new_database_at_once_migrate_it_once(
    empty_pg_url: str,
) -> None:
    opened = await asyncio.gather(
        *(open_db(empty_pg_url) for _ in range(4)), return_exceptions=True
    )
    for conn in opened:
        if not isinstance(conn, BaseException):
            await conn.close()
    assert [c for c in opened if isinstance(c, BaseException)] == []
    with psycopg.connect(empty_pg_url) as conn:
        assert conn.execute("SELECT version FROM facilities_schema").fetchall() == [
            (migrations(PG_MIGRATIONS)[-1].version,)
        ]


async def test_a_database_of_a_newer_version_is_refused(empty_pg_url: str) -> None:
    (await open_db(empty_pg_url)) and None
    with psycopg.connect(empty_pg_url, autocommit=True) as conn:
        conn.execute("UPDATE facilities_schema SET version = 999")
    with pytest.raises(StoreError, match="from a newer version of facilities"):
        await open_db(empty_pg_url)


async def test_an_unreachable_server_is_one_line_without_the_password(
    postgres: PrivatePostgres,
) -> None:
    url = postgres.url("nowhere").replace("postgres@", "postgres:s3cret@")
    with pytest.raises(StoreError) as raised:
        await open_db(url)
    message = str(raised.value)
    assert "\n" not in message
    assert "s3cret" not in message
    assert shown(url) in message
    assert 'database "nowhere" does not exist' in message


async def test_a_batch_is_stored_once_and_duplicates_are_counted_out(empty_pg_url: str) -> None:
    conn = await open_db(empty_pg_url)
    try:
        rows = BatchRows()
        rows.tables["station"].append(("cs-01", 1.5e9, 1, 1.5e9, 30.0, 0.0, 0))
        rows.tables["station"].append(("cs-01", 1.5e9, 2, 1.5e9, None, None, True))
        assert await write_batch(conn, rows) == 2
        assert await write_batch(conn, rows) == 0  # redelivered: nothing new
        assert isinstance(conn, PgConnection)
        async with conn.execute("SELECT seq, smoke FROM station_samples ORDER BY seq") as cur:
            assert await cur.fetchall() == [(1, 0), (2, 1)]
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("SELECT a FROM t WHERE b = ? AND c = :c", "SELECT a FROM t WHERE b = %s AND c = %(c)s"),
        ("INSERT OR IGNORE INTO t VALUES (?)", "INSERT INTO t VALUES (%s) ON CONFLICT DO NOTHING"),
        ("BEGIN IMMEDIATE", "BEGIN"),
        ("SELECT '?', 'a%b', \"x\" FROM t -- ?", "SELECT '?', 'a%%b', \"x\" FROM t -- ?"),
        ("SELECT x FROM t INDEXED BY t_by_y WHERE y = 1", "SELECT x FROM t WHERE y = 1"),
        ("SET last = max(last, excluded.last)", "SET last = GREATEST(last, excluded.last)"),
        ("SELECT max(x) FROM t", "SELECT max(x) FROM t"),
        ("SELECT CAST(ts / :s AS INTEGER)", "SELECT CAST(TRUNC(ts / %(s)s) AS BIGINT)"),
        (
            "WHERE id IN (SELECT value FROM json_each(?))",
            "WHERE id IN (SELECT value FROM json_array_elements_text(%s::json))",
        ),
    ],
)
def test_sqlites_statements_as_postgresql_runs_them(sqlite: str, postgres: str) -> None:
    assert to_postgres(sqlite) == postgres


async def test_rewritten_functions_give_what_sqlite_gives(
    tmp_path: Path, empty_pg_url: str
) -> None:
    """The functions `to_postgres` replaces, on both, with the same values."""
    statements = [
        ("SELECT CAST(7.9 / ? AS INTEGER), CAST(? / 300 AS INTEGER)", (2, 1_700_000_299.9)),
        ("SELECT value FROM json_each(?) ORDER BY value", ('["b", "a"]',)),
        ("SELECT strftime('%H:%M:%fZ', ?, 'unixepoch')", (1_700_000_000.125,)),
        ("SELECT max(?, ?), min(?, ?)", (1.5, 2.5, 1.5, 2.5)),
        ("SELECT x'00ff', length(x'00ff')", ()),
        ("SELECT sum(x), count(*) FROM (SELECT ? AS x UNION ALL SELECT ?) AS t", (2, 3)),
    ]
    lite = await open_db(tmp_path / "f.db")
    pg = await open_db(empty_pg_url)
    try:
        for sql, params in statements:
            async with lite.execute(sql, params) as cursor:
                expected = [tuple(row) for row in await cursor.fetchall()]
            async with pg.execute(sql, params) as cursor:
                assert [tuple(row) for row in await cursor.fetchall()] == expected, sql
    finally:
        await lite.close()
        await pg.close()


def _readings(day: float, received: float) -> BatchRows:
    """Two stations' messages over a day: 2 ports each, every 10 minutes."""
    rows = BatchRows()
    for station in ("cs-01", "cs-02"):
        for n in range(144):
            ts = day + n * 600 + 7
            rows.tables["station"].append((station, ts, n, received, 30.0, 0.0, 0))
            for port in (1, 2):
                state = "charging" if n % 3 else "idle"
                rows.tables["port"].append(
                    (station, ts, n, port, received, state, 220.0, 1.0, 100.0 * port + n, 5.0, 30.0)
                )
    return rows


async def _sweep(target: str, now: float, rows: BatchRows, make_day: float | None) -> Store:
    store = Store(target)
    await store.open()
    if make_day is not None:
        assert await partitions.make_days(store.writer, make_day) > 0
    await write_batch(store.ingest, rows)
    policy = Policy(
        quarantine_days=30, audit_days=30, telemetry_days=14, bucket_days=730, event_days=180
    )
    retention = Retention(
        store.writer,
        policy,
        clock=lambda: now,
        metrics=IngestMetrics(CollectorRegistry(), devices={"cs-01", "cs-02"}),
    )
    await retention.sweep()
    return store


async def test_an_expired_day_is_dropped_whole_its_readings_summed_up_as_on_sqlite(
    tmp_path: Path, empty_pg_url: str
) -> None:
    now = 1_790_000_000.0
    day = partitions.day_of(now - 20 * partitions.DAY_S)
    rows = _readings(day, received=day + 3600)
    pg = await _sweep(empty_pg_url, now, rows, make_day=day)
    lite = await _sweep(str(tmp_path / "f.db"), now, rows, make_day=None)
    try:
        assert day not in await partitions.partitions_of(pg.writer, "port_samples")
        assert day not in await partitions.partitions_of(pg.writer, "station_samples")
        buckets = "SELECT * FROM port_buckets ORDER BY station, start, port"
        summed = await pg.writer.read(buckets, ())
        assert len(summed) == 2 * 2 * 144  # one reading per bucket here
        assert [r[:10] for r in summed] == [r[:10] for r in await lite.writer.read(buckets, ())]
        for table in ("port_samples", "station_samples"):
            count = f"SELECT count(*) FROM {table}"  # noqa: S608
            assert await pg.writer.read(count, ()) == [(0,)]
    finally:
        await pg.close()
        await lite.close()


async def test_a_day_with_a_row_received_since_the_cut_off_is_kept(empty_pg_url: str) -> None:
    """A clock running behind: its rows are kept as long as any other's, so the day is not
    dropped whole; the row-by-row sweep takes what has expired."""
    now = 1_790_000_000.0
    day = partitions.day_of(now - 20 * partitions.DAY_S)
    rows = _readings(day, received=day + 3600)
    rows.tables["station"].append(("cs-03", day + 5, 1, now - 60, 30.0, 0.0, 0))
    store = await _sweep(empty_pg_url, now, rows, make_day=day)
    try:
        assert day in await partitions.partitions_of(store.writer, "station_samples")
        assert await store.writer.read("SELECT station FROM station_samples", ()) == [("cs-03",)]
        assert await store.writer.read("SELECT count(*) FROM port_samples", ()) == [(0,)]
    finally:
        await store.close()


async def test_rows_in_the_default_partition_move_into_their_day_when_it_is_made(
    empty_pg_url: str,
) -> None:
    now = 1_790_000_000.0
    day = partitions.day_of(now)
    store = Store(empty_pg_url)
    await store.open()
    try:
        await write_batch(store.ingest, _readings(day, received=now))  # no day made yet
        default = "SELECT count(*) FROM port_samples_default"
        assert await store.writer.read(default, ()) == [(2 * 144 * 2,)]
        await partitions.make_days(store.writer, now)
        assert await store.writer.read(default, ()) == [(0,)]
        assert await store.writer.read("SELECT count(*) FROM port_samples", ()) == [(576,)]
        made = await partitions.partitions_of(store.writer, "port_samples")
        assert made == [day + n * partitions.DAY_S for n in range(-1, 3)]
        assert await partitions.make_days(store.writer, now) == 0  # made once
    finally:
        await store.close()


@pytest.mark.slow
async def test_a_restarted_server_stops_neither_cut_offs_nor_ingest(
    settings: Settings,
    site: Site,
    empty_pg_url: str,
    postgres: PrivatePostgres,
    device: DeviceFactory,
    devices: Devices,
) -> None:
    """The server drops every connection of the service's (a restart, a failover): the next
    message is stored once it is back, a hazard is switched off meanwhile, nothing twice."""
    commands: list[bytes] = []
    devices.client("observer").subscribe(
        "facilities/charging/cs-07/command", lambda _topic, payload: commands.append(payload)
    )
    db = empty_pg_url
    dbname = db.rsplit("/", 1)[1]
    service = build(settings.model_copy(update={"db": db}), site)
    async with run(service):
        await wait_for(lambda: service.link.subscribed, what="subscription")
        filler, hot = device("cs-06"), device("cs-07")
        filler.publish_raw("facilities/charging/cs-06/telemetry", json.dumps(payloads.telemetry(1)))
        await wait_for(
            lambda: query(db, "SELECT count(*) FROM station_samples") == [(1,)], what="1st"
        )
        terminate = (
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"  # noqa: S608
            f" WHERE datname = '{dbname}'"
        )
        dropped = postgres.query("postgres", terminate)
        assert int(dropped) >= 3  # ingest, the writer, the reader
        for seq in range(2, 12):
            filler.publish_raw(
                "facilities/charging/cs-06/telemetry", json.dumps(payloads.telemetry(seq))
            )
        hot.publish_raw(
            "facilities/charging/cs-07/telemetry",
            json.dumps(
                payloads.telemetry(1, [payloads.port(1, "charging", power_w=300.0, temp_c=72.0)])
            ),
        )
        await wait_for(lambda: commands, what="the power_off after the connections were dropped")
        await wait_for(
            lambda: (
                query(db, "SELECT count(*), count(DISTINCT seq) FROM station_samples") == [(12, 11)]
            ),
            what="every message stored once",
        )

        async def healthy() -> bool:
            # the rows are visible to another connection before the writer has read its
            # COMMIT's answer: healthy once it has (at most its retry wait of 5 s later)
            return (await service.health()).ok

        await wait_for(healthy, what="healthy again")


async def test_two_instances_sweeping_at_once_make_and_drop_each_day_once(
    empty_pg_url: str,
) -> None:
    """Several instances on one database (--partition) each sweep: a day is made once and
    its readings summed up once, whoever comes first."""
    now = 1_790_000_000.0
    day = partitions.day_of(now - 20 * partitions.DAY_S)
    stores = [Store(empty_pg_url), Store(empty_pg_url)]
    for store in stores:
        await store.open()
    try:
        made = await asyncio.gather(*(partitions.make_days(s.writer, day) for s in stores))
        assert sum(made) == 20  # 5 tables x 4 days, each made by one of them
        await write_batch(stores[0].ingest, _readings(day, received=day + 3600))
        dropped = await asyncio.gather(
            *(
                partitions.drop_expired(
                    s.writer,
                    now=now,
                    telemetry_before=now - 14 * partitions.DAY_S,
                    events_before=now - 180 * partitions.DAY_S,
                    bucket_s=300.0,
                )
                for s in stores
            )
        )
        assert sorted(d.rows.get("port_samples", 0) for d in dropped) == [0, 576]
        summed = "SELECT sum(samples) FROM port_buckets"
        assert await stores[0].writer.read(summed, ()) == [(576,)]
    finally:
        for store in stores:
            await store.close()
