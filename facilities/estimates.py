"""Free-time estimates of charging ports: how long a station's charges typically last."""

import asyncio
import statistics
from collections.abc import Callable
from datetime import timedelta

import aiosqlite

from facilities.store import history

# The median length of the station's sessions that ended full or unplugged in the last 30
# days, once it has this many; the site's median before that; DEFAULT_CHARGE until the site
# has any. 3 h: a 48 V 20 Ah e-bike battery from half charge on a typical 2-3 A charger.
# Recomputed every ESTIMATES_EVERY_S.
ESTIMATE_MIN_SESSIONS = 5
ESTIMATE_HISTORY_S = 30 * 24 * 3600
DEFAULT_CHARGE = timedelta(hours=3)
ESTIMATES_EVERY_S = 300.0


class Estimates:
    """Typical charge lengths per station, recomputed from the stored sessions."""

    def __init__(self, reader: aiosqlite.Connection, *, clock: Callable[[], float]) -> None:
        self._reader = reader
        self._clock = clock
        self._typical: dict[str, timedelta] = {}

    def typical_charge(self, station: str) -> timedelta:
        return self._typical.get(station) or self._typical.get("", DEFAULT_CHARGE)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(ESTIMATES_EVERY_S)
            await self.refresh()

    async def refresh(self) -> None:
        since = self._clock() - ESTIMATE_HISTORY_S
        durations = await history.charge_durations(self._reader, since=since)
        typical = {
            station: timedelta(seconds=statistics.median(seconds))
            for station, seconds in durations.items()
            if len(seconds) >= ESTIMATE_MIN_SESSIONS
        }
        everything = [s for seconds in durations.values() for s in seconds]
        if len(everything) >= ESTIMATE_MIN_SESSIONS:
            typical[""] = timedelta(seconds=statistics.median(everything))
        self._typical = typical
