"""Shared fixtures: a real Mosquitto on a free port, real SQLite files, a PostgreSQL of the
tests' own on a free port, the real service.
The helpers and the other fixtures live in tests/support."""

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from facilities.mosquitto import PrivateBroker
from facilities.service import Service, run
from facilities.settings import Settings
from facilities.site import Site, load_site
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
        choices=STORES,
        default=os.environ.get("FACILITIES_TEST_STORE", "sqlite"),
        help="the store the service's tests run on (default: sqlite; tests marked"
        " both_stores run on both whatever this says)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `both_stores` that uses the store runs once on SQLite, once on
    PostgreSQL (docs/development.md)."""
    if "store_target" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_stores"
    ):
        metafunc.parametrize("store_target", STORES, indirect=True)


@pytest.fixture
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The service's database: a fresh SQLite file, or a fresh database on the session's
    own PostgreSQL (`--store postgresql`, or a test marked both_stores)."""
    backend = getattr(request, "param", None) or request.config.getoption("--store")
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


@pytest.fixture
def pg_url(postgres: PrivatePostgres) -> str:
    """The URL of a new empty database of the test's own on the session's PostgreSQL."""
    return postgres.fresh_database(f"test_{uuid.uuid4().hex[:12]}")


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
