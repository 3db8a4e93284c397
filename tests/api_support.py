"""Fixtures for the HTTP API: the real ASGI app with its lifespan over the real service (on
a movable clock), and people with tokens."""

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from facilities import admin
from facilities.access import Role
from facilities.api.app import create_app
from facilities.service import Service, run
from facilities.settings import Settings
from facilities.site import Site
from facilities.wiring import build
from tests.support.clock import MovableClock
from tests.support.poll import wait_for

# Gates and stations answer within this in tests (the site default is 5 s), so that a silent
# device is a 504 after two seconds rather than five. Half a second was too short for a whole
# test run on a loaded machine: a simulated gate's ack, through the broker and three threads
# of the test process, once took longer (a 504 for a gate that acked).
QUICK_TIMEOUT_S = 2.0
CLIENT_ADDRESS = "203.0.113.7"


@pytest.fixture
def quick_site(site: Site) -> Site:
    """The example district with 0.5 s command timeouts and one try for stations."""
    garages = {
        gid: replace(g, thresholds=g.thresholds.merged({"command_timeout_s": QUICK_TIMEOUT_S}))
        for gid, g in site.garages.items()
    }
    stations = {
        sid: replace(
            s,
            thresholds=s.thresholds.merged(
                {"command_timeout_s": QUICK_TIMEOUT_S, "command_tries": 1}
            ),
        )
        for sid, s in site.stations.items()
    }
    return replace(site, garages=garages, stations=stations)


@dataclass
class Api:
    service: Service
    app: FastAPI
    http: httpx.AsyncClient

    def client(self, address: str) -> httpx.AsyncClient:
        """Another client, from another address (rate limits are per address)."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://facilities.test")

    async def person(self, role: Role, name: str = "someone", *garages: str) -> tuple[str, str]:
        """Register through the same code as the command line; (id, token)."""
        added = await admin.add(
            self.service.settings.db, role, name, garages=garages, site=self.service.site
        )
        return added.person.id, added.token


@pytest.fixture
async def api(settings: Settings, quick_site: Site, clock: MovableClock) -> AsyncIterator[Api]:
    service = build(settings, quick_site, clock=clock, monotonic=clock.monotonic)
    app = create_app(service.http)
    async with run(service), LifespanManager(app, startup_timeout=20, shutdown_timeout=20):
        await wait_for(lambda: service.link.subscribed, what="subscription")
        # a test's own sweep must not share its rows with the one at start
        await wait_for(lambda: service.retention.sweeps >= 1, what="the sweep at start")
        transport = httpx.ASGITransport(app=app, client=(CLIENT_ADDRESS, 40000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://facilities.test"
        ) as http:
            yield Api(service, app, http)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
