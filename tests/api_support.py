"""Fixtures for the HTTP API: the real ASGI app with its lifespan over the real service,
a movable clock, people with tokens, and simulated gates on the session broker."""

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from facilities import admin
from facilities.access import Role
from facilities.api.app import create_app
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl
from facilities.mqtt.topics import Topics
from facilities.service import Service, run
from facilities.settings import Settings
from facilities.site import Site
from facilities.wiring import build
from simulators.charging import PortModel, StationModel
from simulators.client import DeviceClient
from simulators.devices import Behaviour, SimulatedGarage, SimulatedStation
from tests.conftest import wait_for

# Gates and stations answer within this in tests (the site default is 5 s), so that a silent
# device is a 504 after half a second rather than five.
QUICK_TIMEOUT_S = 0.5
CLIENT_ADDRESS = "203.0.113.7"


class MovableClock:
    """Real time plus an offset that tests move forward instead of sleeping: the wall clock
    (calling it) and the monotonic clock (`monotonic`) move together, unless the wall clock
    is stepped on its own (`step_wall`, as NTP or an operator may)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.monotonic_offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.monotonic_offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        self.monotonic_offset += seconds

    def step_wall(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


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
        transport = httpx.ASGITransport(app=app, client=(CLIENT_ADDRESS, 40000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://facilities.test"
        ) as http:
            yield Api(service, app, http)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def gates(broker: PrivateBroker) -> Iterator[Callable[..., SimulatedGarage]]:
    """Simulated garage controllers on the session broker, answering as told."""
    made: list[DeviceClient] = []

    def garage(garage_id: str, behaviour: Behaviour = Behaviour.OBEY) -> SimulatedGarage:
        client = DeviceClient(
            BrokerUrl.parse(broker.url(garage_id)), client_id=f"{garage_id}-{uuid.uuid4().hex[:4]}"
        )
        made.append(client.connect())
        gate_ids = {"g-cq4": ("north", "south"), "g-cq8": ("main",), "g-hc3": ("north", "east")}
        return SimulatedGarage(
            client, garage_id, gate_ids[garage_id], Topics(), behaviour=behaviour
        )

    yield garage
    for client in made:
        client.close()


@pytest.fixture
def stations(broker: PrivateBroker) -> Iterator[Callable[..., SimulatedStation]]:
    """Simulated charging stations (10 ports) on the session broker, obeying commands."""
    made: list[DeviceClient] = []

    def station(station_id: str, behaviour: Behaviour = Behaviour.OBEY) -> SimulatedStation:
        client = DeviceClient(
            BrokerUrl.parse(broker.url(station_id)),
            client_id=f"{station_id}-{uuid.uuid4().hex[:4]}",
        )
        made.append(client.connect())
        model = StationModel(station_id, [PortModel(n) for n in range(1, 11)])
        return SimulatedStation(client, model, Topics(), behaviour=behaviour)

    yield station
    for client in made:
        client.close()


def telemetry(seq: int, ports: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A station telemetry message as firmware writes it."""
    return {"seq": seq, "ts": fields.pop("ts", time.time()), "ports": ports, **fields}


def port(n: int, state: str = "idle", **fields: Any) -> dict[str, Any]:
    power = fields.pop("power_w", 180.0 if state == "charging" else 0.0)
    return {"port": n, "state": state, "voltage_v": 220.0, "power_w": power, **fields}
