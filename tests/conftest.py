"""Shared fixtures: a real Mosquitto on a free port, real SQLite files, the real service."""

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl
from facilities.mqtt.topics import Topics
from facilities.service import Service, run
from facilities.settings import Settings
from facilities.site import Site, load_site
from facilities.wiring import build
from simulators.client import DeviceClient

pytest_plugins = ["tests.api_support", "tests.district"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SITE = ROOT / "site.example.toml"

# Test-only users: an observer that reads everything, and a rogue client that may write
# anything under the prefix (what a stale ACL or a misconfigured broker would let through).
EXTRA_USERS = {
    "observer": ("topic read facilities/#",),
    "rogue": ("topic write facilities/#",),
}


@pytest.fixture(scope="session")
def site() -> Site:
    return load_site(EXAMPLE_SITE)


def start_broker(workdir: Path, site: Site) -> PrivateBroker:
    return PrivateBroker(workdir, site, extra_users=dict(EXTRA_USERS)).start()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[PrivateBroker]:
    """One broker for the session, from the shipped mosquitto.conf, on a free port."""
    running = start_broker(tmp_path_factory.mktemp("broker"), site)
    yield running
    running.stop()


def clear_retained_status(broker: PrivateBroker, site: Site) -> None:
    """Remove every device's retained availability from the shared broker: the `offline`
    that an earlier test's devices left (their Will, a clean close) is not this test's, and
    the service sends nothing to a device it knows is offline (docs/rules.md)."""
    rogue = broker.new_user_like("rogue")
    client = DeviceClient(BrokerUrl.parse(broker.url(rogue)), client_id=rogue).connect()
    try:
        topics = [Topics().station(s, "availability") for s in site.stations]
        topics += [Topics().garage(g, "availability") for g in site.garages]
        for info in [client.publish_raw(t, b"", retain=True) for t in topics]:
            info.wait_for_publish(5)
    finally:
        client.close()


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


DeviceFactory = Callable[..., DeviceClient]


@pytest.fixture
def device(broker: PrivateBroker) -> Iterator[DeviceFactory]:
    """Connect as a device (or test user) with its own credentials; closed at teardown. A test
    user (`observer`, `rogue`) is a new user with its ACL at each call: connections of one user
    share one client id (mosquitto.conf), so two at once would take turns."""
    clients: list[DeviceClient] = []

    def connect(user: str, *, client_id: str | None = None) -> DeviceClient:
        if user in broker.extra_users:
            user = broker.new_user_like(user)
        url = BrokerUrl.parse(broker.url(user))
        client = DeviceClient(url, client_id=client_id or f"{user}-{uuid.uuid4().hex[:6]}")
        clients.append(client.connect())
        return client

    yield connect
    for client in clients:
        client.close()


async def wait_for(
    condition: Callable[[], bool], *, timeout_s: float = 10.0, what: str = "condition"
) -> None:
    """Poll a condition that a real broker or service will make true; fail after a timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


def query(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Read the service's database from outside, as an operator would."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(sql, params).fetchall()
