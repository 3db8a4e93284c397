"""Devices on the session broker, each with its own credentials: raw clients, simulated
stations and garages; whatever a test connects is closed at its teardown."""

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl
from facilities.mqtt.topics import Topics
from facilities.site import Site
from simulators.charging import PortModel, StationModel
from simulators.client import DeviceClient
from simulators.devices import Behaviour, SimulatedGarage, SimulatedStation

DeviceFactory = Callable[..., DeviceClient]

# The example district's gates (site.example.toml).
GATES = {"g-cq4": ("north", "south"), "g-cq8": ("main",), "g-hc3": ("north", "east")}
PORTS = 10


class Devices:
    """Connections one test makes to the broker; `close` ends them all."""

    def __init__(self, broker: PrivateBroker) -> None:
        self.broker = broker
        self.clients: list[DeviceClient] = []

    def client(self, user: str, *, client_id: str | None = None) -> DeviceClient:
        """Connect as a device (or test user) with its own credentials. A test user
        (`observer`, `rogue`) is a new user with its ACL at each call: connections of one user
        share one client id (mosquitto.conf), so two at once would take turns."""
        if user in self.broker.extra_users:
            user = self.broker.new_user_like(user)
        url = BrokerUrl.parse(self.broker.url(user))
        client = DeviceClient(url, client_id=client_id or f"{user}-{uuid.uuid4().hex[:6]}")
        self.clients.append(client.connect())
        return client

    def station(
        self,
        station_id: str,
        behaviour: Behaviour = Behaviour.OBEY,
        *,
        now: Callable[[], float] = time.time,
    ) -> SimulatedStation:
        """A simulated charging station with 10 ports, answering commands as told, its
        timestamps from `now`."""
        model = StationModel(station_id, [PortModel(n) for n in range(1, PORTS + 1)])
        client = self.client(station_id)
        return SimulatedStation(client, model, Topics(), behaviour=behaviour, now=now)

    def garage(self, garage_id: str, behaviour: Behaviour = Behaviour.OBEY) -> SimulatedGarage:
        """A simulated garage controller with the example district's gates."""
        client = self.client(garage_id)
        return SimulatedGarage(client, garage_id, GATES[garage_id], Topics(), behaviour=behaviour)

    def close(self) -> None:
        for client in self.clients:
            client.close()


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
def devices(broker: PrivateBroker) -> Iterator[Devices]:
    """The test's connections to the session broker, closed at teardown."""
    made = Devices(broker)
    yield made
    made.close()


@pytest.fixture
def device(devices: Devices) -> DeviceFactory:
    """Connect as a device or test user: `device("cs-01")`, `device("observer")`."""
    return devices.client


@pytest.fixture
def stations(devices: Devices) -> Callable[..., SimulatedStation]:
    """Simulated charging stations (10 ports), obeying commands unless told otherwise."""
    return devices.station


@pytest.fixture
def gates(devices: Devices) -> Callable[..., SimulatedGarage]:
    """Simulated garage controllers, answering as told."""
    return devices.garage
