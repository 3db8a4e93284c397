"""Shared fixtures: a real Mosquitto on a free port, real SQLite files, the real service.
The helpers and the other fixtures live in tests/support."""

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
from tests.support.processes import start_broker

pytest_plugins = [
    "tests.api_support",
    "tests.support.browser",
    "tests.support.clock",
    "tests.support.devices",
    "tests.support.district",
    "tests.support.split",
]


@pytest.fixture(scope="session")
def site() -> Site:
    return load_site(EXAMPLE_SITE)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[PrivateBroker]:
    """One broker for the session, from the shipped mosquitto.conf, on a free port."""
    running = start_broker(tmp_path_factory.mktemp("broker"), site)
    yield running
    running.stop()


@pytest.fixture
def settings(tmp_path: Path, broker: PrivateBroker, site: Site) -> Settings:
    """The service's settings, with a broker user of its own: the broker takes the client id
    from the user name, so the user is the persistent session (mosquitto.conf)."""
    clear_retained_status(broker, site)
    return Settings(
        site=EXAMPLE_SITE,
        broker=broker.service_url(f"facilities-test-{uuid.uuid4().hex[:8]}"),
        db=tmp_path / "facilities.db",
        connect_timeout_s=5.0,
    )


@pytest.fixture
async def service(settings: Settings, site: Site) -> AsyncIterator[Service]:
    """The service running against the session broker, with a fresh database."""
    running = build(settings, site)
    async with run(running):
        await wait_for(lambda: running.link.subscribed, what="subscription")
        yield running
