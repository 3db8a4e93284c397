"""The simulated district without a network: every device's model stepped on one clock."""

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from facilities.charging.payloads import StationEvent, StationTelemetry
from facilities.garage.payloads import GarageTelemetry, GateEventType
from facilities.site import Site
from simulators.charging import StationModel
from simulators.garage import GarageModel

_SHANGHAI_UTC_OFFSET_H = 8


@dataclass
class SimClock:
    """Two clocks: `wall()` is the devices' own clock (what their messages are stamped with,
    the clock the service judges them on), and the simulated day, which runs `speed` times
    faster so that a demo shows an evening in minutes."""

    speed: float = 1.0
    wall: Callable[[], float] = time.time
    started_real: float = field(init=False)
    started_sim: float = field(init=False)

    def __post_init__(self) -> None:
        self.started_real = self.started_sim = self.wall()

    def now(self) -> float:
        """The simulated time (epoch seconds)."""
        return self.started_sim + (self.wall() - self.started_real) * self.speed

    def hour(self) -> float:
        """Hour of the simulated day in Shanghai."""
        return ((self.now() / 3600.0) + _SHANGHAI_UTC_OFFSET_H) % 24.0


GateHappening = tuple[str, GateEventType, str | None]  # gate, what happened, credential


class World:
    """The models of every device of a site. Each step moves one device on by the time its
    own clock says has passed since its last step: the day (plug-ins, charging, traffic) at
    the clock's speed, and what the service times on the device's clock (a socket's
    warming, smoke) at the device's pace, so time compression never makes a healthy device
    look like a fast-moving hazard."""

    def __init__(self, site: Site, *, clock: SimClock, rng: random.Random) -> None:
        self.clock = clock
        self.rng = rng
        hour = clock.hour()
        started = clock.wall()
        self.stations = {
            s.id: StationModel.new(s.id, s.ports, rng, hour) for s in site.stations.values()
        }
        self.garages = {
            g.id: GarageModel.new(g.id, g.capacity, g.gates, hour) for g in site.garages.values()
        }
        self._stepped: dict[str, float] = dict.fromkeys([*self.stations, *self.garages], started)

    def _elapsed(self, device: str) -> tuple[float, float]:
        """Seconds on the device's clock since its last step, and that clock's time now."""
        now = self.clock.wall()
        device_s = max(0.0, now - self._stepped[device])
        self._stepped[device] = now
        return device_s, now

    def station_step(self, station: str) -> tuple[list[StationEvent], StationTelemetry]:
        """Move a station on to now: its events since the last step and its telemetry."""
        model = self.stations[station]
        device_s, now = self._elapsed(station)
        model.advance(
            device_s * self.clock.speed, self.clock.hour(), self.rng, device_dt_s=device_s
        )
        return model.take_events(now), model.telemetry(now, self.rng)

    def garage_step(self, garage: str) -> tuple[list[GateHappening], GarageTelemetry]:
        """Move a garage on to now: what happened at its gates and its telemetry."""
        model = self.garages[garage]
        device_s, now = self._elapsed(garage)
        model.advance(
            device_s * self.clock.speed, self.clock.hour(), self.rng, device_dt_s=device_s
        )
        return model.take_pending(), model.telemetry(now, self.rng)
