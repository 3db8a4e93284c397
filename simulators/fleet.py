"""Every device of a site, simulated: stations and garages publishing at the protocol's cadence."""

import asyncio
import logging
import random
import tomllib
from dataclasses import replace
from pathlib import Path

from facilities.errors import OperatorError
from facilities.mqtt.broker_url import BrokerUrl
from facilities.mqtt.topics import Topics
from facilities.site import Site
from simulators.client import DeviceClient
from simulators.devices import SimulatedGarage, SimulatedStation
from simulators.world import SimClock, World

log = logging.getLogger(__name__)

TELEMETRY_INTERVAL_S = 10.0  # docs/protocol.md, "Topics": every 10 s by default
MIN_REAL_INTERVAL_S = 0.05  # at high speed-ups, don't flood: simulated steps just get longer
# Fault scenarios, each on one device FAULT_AFTER_S after the start; the service's answer
# (power off, gates open) ends it, as it would end the real hazard.
SCENARIOS = ("normal", "overload", "overheat", "leakage", "smoke", "garage-smoke")
FAULT_AFTER_S = 10.0
GARAGE_SMOKE_S = 300.0  # seconds of smoke in the garage-smoke scenario


def load_credentials(path: Path) -> dict[str, str]:
    """Device passwords as `broker-config` prints them (`cs-01 = "..."`)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise OperatorError(f"credentials file {path}: {exc}") from None
    return {str(k): str(v) for k, v in data.items()}


class Fleet:
    """Connects one client per device and runs their loops until stopped. Devices answer the
    service's commands as real ones do (a power_off switches the port off)."""

    def __init__(
        self,
        site: Site,
        url: BrokerUrl,
        *,
        credentials: dict[str, str] | None = None,
        speed: float = 1.0,
        topics: Topics | None = None,
        seed: int | None = None,
        scenario: str = "normal",
        fault_after_s: float = FAULT_AFTER_S,
        clock: SimClock | None = None,
    ) -> None:
        if scenario not in SCENARIOS:
            known = ", ".join(SCENARIOS)
            raise OperatorError(f"--scenario {scenario!r}: known scenarios are {known}")
        self.site = site
        self.url = url
        self.credentials = credentials
        self.clock = clock or SimClock(speed=speed)
        self.topics = topics or Topics()
        self.rng = random.Random(seed)
        self.world = World(site, clock=self.clock, rng=self.rng)
        self.interval_s = max(MIN_REAL_INTERVAL_S, TELEMETRY_INTERVAL_S / self.clock.speed)
        self.scenario = scenario
        self.fault_after_s = fault_after_s
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
        """Connect every device as itself and subscribe it to its commands (blocking: call it
        from a thread in async code)."""
        for station in self.site.stations.values():
            client = self._connect(station.id, self.topics.station(station.id, "availability"))
            model = self.world.stations[station.id]
            self.stations[station.id] = SimulatedStation(
                client, model, self.topics, now=self.clock.wall
            )
        for garage in self.site.garages.values():
            client = self._connect(garage.id, self.topics.garage(garage.id, "availability"))
            self.garages[garage.id] = SimulatedGarage(
                client, garage.id, garage.gates, self.topics, now=self.clock.wall
            )
        log.info("%d simulated devices connected to %s", len(self.clients), self.url.display())

    def _connect(self, device: str, availability: str) -> DeviceClient:
        url = self._url_for(device)
        client = DeviceClient(url, client_id=device, availability_topic=availability)
        self.clients[device] = client.connect()
        return client

    async def run(self) -> None:
        """Publish for every device until cancelled; each device starts at a random phase."""
        async with asyncio.TaskGroup() as tasks:
            for station in self.stations.values():
                tasks.create_task(self._station(station), name=f"sim-{station.model.station}")
            for garage_id, device in self.garages.items():
                tasks.create_task(self._garage(device), name=f"sim-{garage_id}")
            if self.scenario != "normal":
                tasks.create_task(self._fault(), name=f"sim-fault-{self.scenario}")

    async def _fault(self) -> None:
        await asyncio.sleep(self.fault_after_s)
        if self.scenario == "garage-smoke":
            garage_id = sorted(self.garages)[0]
            self.world.garages[garage_id].smoke_left_s = GARAGE_SMOKE_S
            log.warning("scenario: smoke in garage %s", garage_id)
            return
        station = self.stations[sorted(self.stations)[0]]
        with station.lock:
            target = station.model
            if self.scenario == "overload":
                target.overload_port = 1
            elif self.scenario == "overheat":
                target.overheat_port = 1
            elif self.scenario == "leakage":
                target.leaking = True
            elif self.scenario == "smoke":
                target.smoking = True
        log.warning("scenario: %s at %s", self.scenario, target.station)

    async def _station(self, device: SimulatedStation) -> None:
        model, client = device.model, device.client
        await asyncio.sleep(self.rng.uniform(0, self.interval_s))
        while True:
            with device.lock:
                events, telemetry = self.world.station_step(model.station)
                for event in events:
                    client.publish(self.topics.station(model.station, "event"), event)
                    self.published += 1
                device.publish(telemetry)
            self.published += 1
            await asyncio.sleep(self.interval_s)

    async def _garage(self, device: SimulatedGarage) -> None:
        await asyncio.sleep(self.rng.uniform(0, self.interval_s))
        while True:
            happenings, telemetry = self.world.garage_step(device.garage)
            for gate, kind, credential in happenings:
                device.gate_event(gate, kind, credential)
                self.published += 1
            device.client.publish(self.topics.garage(device.garage, "telemetry"), telemetry)
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
    broker_ca: str = "",
    credentials_path: Path | None,
    scenario: str = "normal",
    speed: float = 1.0,
    run_for_s: float = 0.0,
    topic_prefix: str = "facilities",
) -> None:
    """`facilities simulate`: run every device of the site until Ctrl-C (or `run_for_s`)."""
    credentials = load_credentials(credentials_path) if credentials_path else None
    fleet = Fleet(
        site,
        BrokerUrl.parse(broker, ca_file=broker_ca),
        credentials=credentials,
        speed=speed,
        topics=Topics(topic_prefix),
        scenario=scenario,
    )
    await asyncio.to_thread(fleet.connect)
    try:
        async with asyncio.timeout(run_for_s or None):
            await fleet.run()
    except TimeoutError:
        log.info("ran for %.0f s, %d messages published", run_for_s, fleet.published)
    finally:
        fleet.close()
