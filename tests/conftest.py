"""Shared fixtures: a real Mosquitto on a free port, real SQLite files, a PostgreSQL of the
tests' own on a free port, the real service.
The helpers and the other fixtures live in tests/support."""

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from facilities.mosquitto import PrivateBroker
from facilities.service import Service, run
from facilities.settings import Settings
from facilities.site import Site, load_site
from facilities.store import partitions
from facilities.store.db import Store
from facilities.wiring import build
from tests.support.devices import clear_retained_status
from tests.support.paths import EXAMPLE_SITE
from tests.support.poll import wait_for
from tests.support.postgres import PostgresMissingError, PrivatePostgres
from tests.support.processes import start_broker

pytest_plugins = [
    "tests.api_support",
    "tests.support.browser",
    "tests.support.clock",
    "tests.support.devices",
    "tests.support.district",
    "tests.support.split",
]


STORES = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        choices=(*STORES, "both"),
        default=os.environ.get("FACILITIES_TEST_STORE", "both"),
        help="the store the tests that use one run on (default: both, each such test once on"
        " SQLite and once on the session's own PostgreSQL)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses the store (`store_target`) runs on each store `--store` names:
    by default once on SQLite, once on PostgreSQL (docs/postgresql.md, "Tests")."""
    if "store_target" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--store")
        stores = STORES if chosen == "both" else (chosen,)
        if metafunc.definition.get_closest_marker("sqlite_only"):
            stores = ("sqlite",)  # about SQLite's own file: its lock (the marker says why)
        metafunc.parametrize("store_target", stores, indirect=True)


@pytest.fixture
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The service's database: a fresh SQLite file, or a fresh database on the session's
    own PostgreSQL."""
    backend = request.param
    if backend == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return str(tmp_path / "facilities.db")


@pytest.fixture(scope="session")
def site() -> Site:
    return load_site(EXAMPLE_SITE)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[PrivateBroker]:
    """One broker for the session, from the shipped mosquitto.conf, on a free port."""
    running = start_broker(tmp_path_factory.mktemp("broker"), site)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PrivatePostgres]:
    """One PostgreSQL for the session, a throwaway cluster of its own on a free port (never a
    server already running on the machine), started when a test first asks for it."""
    try:
        server, missing = PrivatePostgres(), ""
    except PostgresMissingError as exc:
        missing = str(exc)  # one line, outside the handler: not the traceback of how we looked
    if missing:
        pytest.fail(missing, pytrace=False)
    running = server.start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def migrated(postgres: PrivatePostgres) -> str:
    """A database the service has migrated, with today's partitions: each test's database is
    a copy of it, which is quicker than migrating each (the migrations' own tests start from
    an empty database: `empty_pg_url`)."""
    url = postgres.fresh_database("migrated")
    asyncio.run(_migrate(url))
    return "migrated"


async def _migrate(url: str) -> None:
    store = Store(url)
    await store.open()
    try:
        await partitions.make_days(store.writer, time.time())
    finally:
        await store.close()


@pytest.fixture
def empty_pg_url(postgres: PrivatePostgres) -> str:
    """The URL of a new empty database of the test's own on the session's PostgreSQL."""
    return postgres.fresh_database(f"test_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def pg_url(postgres: PrivatePostgres, migrated: str) -> str:
    """The URL of a new database of the test's own on the session's PostgreSQL, migrated."""
    return postgres.fresh_database(f"test_{uuid.uuid4().hex[:12]}", template=migrated)


@pytest.fixture
def settings(store_target: str, broker: PrivateBroker, site: Site) -> Settings:
    """The service's settings, with a broker user of its own: the broker takes the client id
    from the user name, so the user is the persistent session (mosquitto.conf)."""
    clear_retained_status(broker, site)
    return Settings(
        site=EXAMPLE_SITE,
        broker=broker.service_url(f"facilities-test-{uuid.uuid4().hex[:8]}"),
        db=store_target,
        connect_timeout_s=5.0,
    )


@pytest.fixture
async def service(settings: Settings, site: Site) -> AsyncIterator[Service]:
    """The service running against the session broker, with a fresh database."""
    running = build(settings, site)
    async with run(running):
        await wait_for(lambda: running.link.subscribed, what="subscription")
        yield running
