"""Every device of a site, simulated: stations and garages publishing at the protocol's cadence."""

import asyncio
import logging
import random
import time
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from facilities.errors import OperatorError
from facilities.mqtt.session import BrokerUrl
from facilities.mqtt.topics import Topics
from facilities.site import Site
from simulators.charging import StationModel
from simulators.client import DeviceClient
from simulators.devices import SimulatedGarage, SimulatedStation
from simulators.garage import GarageModel

log = logging.getLogger(__name__)

TELEMETRY_INTERVAL_S = 10.0  # PROTOCOL.md: every 10 s by default
MIN_REAL_INTERVAL_S = 0.05  # at high speed-ups, don't flood: simulated steps just get longer
SCENARIOS = ("normal",)
_SHANGHAI_UTC_OFFSET_H = 8


def load_credentials(path: Path) -> dict[str, str]:
    """Device passwords as `broker-config` prints them (`cs-01 = "..."`)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise OperatorError(f"credentials file {path}: {exc}") from None
    return {str(k): str(v) for k, v in data.items()}


@dataclass
class SimClock:
    """Simulated time: starts now, runs `speed` times faster than the wall clock."""

    speed: float = 1.0
    started_real: float = field(default_factory=time.time)
    started_sim: float = field(default_factory=time.time)

    def now(self) -> float:
        return self.started_sim + (time.time() - self.started_real) * self.speed

    def hour(self) -> float:
        """Hour of the day in Shanghai."""
        return ((self.now() / 3600.0) + _SHANGHAI_UTC_OFFSET_H) % 24.0


class Fleet:
    """Connects one client per device and runs their loops until stopped."""

    def __init__(
        self,
        site: Site,
        url: BrokerUrl,
        *,
        credentials: dict[str, str] | None = None,
        speed: float = 1.0,
        topics: Topics | None = None,
        seed: int | None = None,
    ) -> None:
        self.site = site
        self.url = url
        self.credentials = credentials
        self.clock = SimClock(speed=speed)
        self.topics = topics or Topics()
        self.rng = random.Random(seed)
        self.interval_s = max(MIN_REAL_INTERVAL_S, TELEMETRY_INTERVAL_S / speed)
        self.published = 0
        self.clients: dict[str, DeviceClient] = {}
        self.stations: dict[str, SimulatedStation] = {}
        self.garages: dict[str, SimulatedGarage] = {}

    def _url_for(self, device: str) -> BrokerUrl:
        if self.credentials is None:
            return self.url
        if device not in self.credentials:
            raise OperatorError(f"no credentials for device {device}")
        return replace(self.url, username=device, password=self.credentials[device])

    def connect(self) -> None:
        for station in self.site.stations:
            topic = self.topics.station(station, "availability")
            client = DeviceClient(
                self._url_for(station), client_id=station, availability_topic=topic
            )
            self.clients[station] = client.connect()
        for garage in self.site.garages:
            topic = self.topics.garage(garage, "availability")
            client = DeviceClient(self._url_for(garage), client_id=garage, availability_topic=topic)
            self.clients[garage] = client.connect()
        log.info("%d simulated devices connected to %s", len(self.clients), self.url.display())

    def _connect(self, device: str, availability: str) -> None:
        url = self._url_for(device)
        client = DeviceClient(url, client_id=device, availability_topic=availability)
        self.clients[device] = client.connect()

    async def run(self) -> None:
        """Publish for every device until cancelled; each device starts at a random phase."""
        hour = self.clock.hour()
        async with asyncio.TaskGroup() as tasks:
            for station in self.site.stations.values():
                model = StationModel.new(station.id, station.ports, self.rng, hour)
                tasks.create_task(self._station(model), name=f"sim-{station.id}")
            for garage in self.site.garages.values():
                gmodel = GarageModel.new(garage.id, garage.capacity, garage.gates, hour)
                tasks.create_task(self._garage(gmodel), name=f"sim-{garage.id}")

    async def _station(self, model: StationModel) -> None:
        client = self.clients[model.station]
        await asyncio.sleep(self.rng.uniform(0, self.interval_s))
        while True:
            model.advance(self.interval_s * self.clock.speed, self.clock.hour(), self.rng)
            now = time.time()
            for event in model.take_events(now):
                client.publish(self.topics.station(model.station, "event"), event)
                self.published += 1
            telemetry = model.telemetry(now, self.rng)
            client.publish(self.topics.station(model.station, "telemetry"), telemetry)
            self.published += 1
            await asyncio.sleep(self.interval_s)

    async def _garage(self, model: GarageModel) -> None:
        client = self.clients[model.garage]
        await asyncio.sleep(self.rng.uniform(0, self.interval_s))
        while True:
            model.advance(self.interval_s * self.clock.speed, self.clock.hour(), self.rng)
            now = time.time()
            for gate, event in model.take_events(now):
                client.publish(self.topics.gate(model.garage, gate, "event"), event)
                self.published += 1
            client.publish(
                self.topics.garage(model.garage, "telemetry"), model.telemetry(now, self.rng)
            )
            self.published += 1
            await asyncio.sleep(self.interval_s)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()


async def run_fleet(
    site: Site,
    *,
    broker: str,
    credentials_path: Path | None,
    scenario: str = "normal",
    speed: float = 1.0,
    run_for_s: float = 0.0,
    topic_prefix: str = "facilities",
) -> None:
    """`facilities simulate`: run every device of the site until Ctrl-C (or `run_for_s`)."""
    if scenario not in SCENARIOS:
        raise OperatorError(f"--scenario {scenario!r}: known scenarios are {', '.join(SCENARIOS)}")
    credentials = load_credentials(credentials_path) if credentials_path else None
    fleet = Fleet(
        site,
        BrokerUrl.parse(broker),
        credentials=credentials,
        speed=speed,
        topics=Topics(topic_prefix),
    )
    await asyncio.to_thread(fleet.connect)
    try:
        async with asyncio.timeout(run_for_s or None):
            await fleet.run()
    except TimeoutError:
        log.info("ran for %.0f s, %d messages published", run_for_s, fleet.published)
    finally:
        fleet.close()
