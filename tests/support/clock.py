"""A clock that tests move instead of sleeping."""

import time

import pytest


class MovableClock:
    """Wall and monotonic time that tests move forward instead of sleeping: real time plus an
    offset, or (`frozen`) the time of creation plus the offset, so that only the test moves it.
    The wall clock (calling it) and the monotonic clock (`monotonic`) move together, unless
    the wall clock is stepped on its own (`step_wall`, as NTP or an operator may)."""

    def __init__(self, *, frozen: bool = False) -> None:
        self.offset = 0.0
        self.monotonic_offset = 0.0
        self.frozen_at = (time.time(), time.monotonic()) if frozen else None

    def __call__(self) -> float:
        wall = time.time() if self.frozen_at is None else self.frozen_at[0]
        return wall + self.offset

    def monotonic(self) -> float:
        mono = time.monotonic() if self.frozen_at is None else self.frozen_at[1]
        return mono + self.monotonic_offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        self.monotonic_offset += seconds

    def step_wall(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> MovableClock:
    """Real time that the test moves forward (the `api` fixture's service runs on it)."""
    return MovableClock()
