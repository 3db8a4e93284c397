"""The service's time: a wall clock that never steps back, and monotonic time for durations."""

import threading
import time
from collections.abc import Callable

# After the wall clock steps back, the service's time runs this much slower than real time
# until the wall clock has caught up (300 s back: about 8 h), as NTP slews: durations stay
# within 1 %, and no time the service records (alerts, samples) goes back.
SLEW = 0.01


class SteadyClock:
    """Unix seconds from `wall`, except that they never go back: when the wall clock steps
    back, time goes on from where it was (at 1 − SLEW of the monotonic rate) until the wall
    clock catches up. A step forward is taken at once (a clock that was late is right now)."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._lock = threading.Lock()  # read from paho's thread and the event loop
        self._last = wall()
        self._last_monotonic = monotonic()

    def __call__(self) -> float:
        with self._lock:
            wall, monotonic = self._wall(), self._monotonic()
            elapsed = max(0.0, monotonic - self._last_monotonic)
            steady = self._last + elapsed * (1.0 - SLEW)
            self._last = max(wall, steady)
            self._last_monotonic = monotonic
            return self._last
