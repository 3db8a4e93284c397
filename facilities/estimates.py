"""When a charging port's charge will be done: per port, from what it has delivered and draws
now, against what a full charge typically takes at its station."""

import asyncio
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from facilities.charging.live import PortLive
from facilities.charging.payloads import PortState
from facilities.store import history
from facilities.store.sql import Connection

# A station's typical charge: the median energy (and length) of its sessions of the last 30
# days that ended full (the charge_complete rule) or unplugged, once it has this many; the
# site's median before that; the defaults until the site has any. 500 Wh: a 48 V 20 Ah e-bike
# pack (~960 Wh) from about half; 3 h: the same at a typical 2-3 A charger. Recomputed every
# ESTIMATES_EVERY_S.
ESTIMATE_MIN_SESSIONS = 5
ESTIMATE_HISTORY_S = 30 * 24 * 3600
DEFAULT_ENERGY_WH = 500.0
DEFAULT_CHARGE = timedelta(hours=3)
ESTIMATES_EVERY_S = 300.0
# A charge is never expected to end closer than this: a port still charging takes a while.
MIN_ESTIMATE = timedelta(minutes=10)
# A battery that has taken more than the typical energy (a larger pack) still needs this
# share of it: its charger is near the end, not done.
TAIL_SHARE = 0.1


@dataclass(frozen=True, slots=True)
class Typical:
    """What a full charge typically takes at a station."""

    energy_wh: float = DEFAULT_ENERGY_WH
    duration: timedelta = DEFAULT_CHARGE


def charge_done_at(
    port: PortLive,
    typical: Typical,
    now: datetime,
    *,
    trickle_w: float,
    longest: timedelta,
) -> datetime | None:
    """When `port`'s charge is expected to be done (None unless it is shown charging: not
    while a fault event of the port is open, when residents see it as `fault`): the typical
    energy less what the port has delivered this session, at the power it draws now (at least
    TAIL_SHARE of the typical energy left); a port drawing under `trickle_w` (the charger
    topping up) is about done. Without power or energy readings: the session's start plus
    the typical length. Never closer than MIN_ESTIMATE, never past the session's start plus
    `longest` (the rules' longest session)."""
    if port.state is not PortState.CHARGING or port.fault_code is not None:
        return None
    power, energy = port.power_w, port.energy_wh
    if power is not None and power > 0 and energy is not None:
        if power < trickle_w:
            return now + MIN_ESTIMATE
        left_wh = max(typical.energy_wh - energy, TAIL_SHARE * typical.energy_wh)
        done = now + timedelta(hours=left_wh / power)
    elif port.session_started is not None:
        done = port.session_started + typical.duration
    else:
        return None
    done = min(done, (port.session_started or now) + longest)
    return max(done, now + MIN_ESTIMATE)


class Estimates:
    """Typical full charges per station, recomputed from the stored sessions."""

    def __init__(self, reader: Connection, *, clock: Callable[[], float]) -> None:
        self._reader = reader
        self._clock = clock
        self._energy: dict[str, float] = {}
        self._duration: dict[str, timedelta] = {}

    def typical(self, station: str) -> Typical:
        return Typical(
            energy_wh=self._energy.get(station) or self._energy.get("", DEFAULT_ENERGY_WH),
            duration=self._duration.get(station) or self._duration.get("", DEFAULT_CHARGE),
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(ESTIMATES_EVERY_S)
            await self.refresh()

    async def refresh(self) -> None:
        since = self._clock() - ESTIMATE_HISTORY_S
        durations = await history.charge_durations(self._reader, since=since)
        energies = await history.charge_energies(self._reader, since=since)
        self._duration = {
            key: timedelta(seconds=seconds) for key, seconds in _medians(durations).items()
        }
        self._energy = _medians(energies)


def _medians(values: dict[str, list[float]]) -> dict[str, float]:
    """Per station the median of its values once it has enough; under "" the site's."""
    found = {
        station: statistics.median(mine)
        for station, mine in values.items()
        if len(mine) >= ESTIMATE_MIN_SESSIONS
    }
    everything = [v for mine in values.values() for v in mine]
    if len(everything) >= ESTIMATE_MIN_SESSIONS:
        found[""] = statistics.median(everything)
    return found
