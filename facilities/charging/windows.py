"""The temperature windows of `temperature_rise`: the rising minima of the last window."""

# A monotonic queue per window; a late reading is put in its place in time.

import bisect
from collections import deque
from datetime import datetime, timedelta


def remember(
    history: deque[tuple[datetime, float]], at: datetime, value: float, window: timedelta
) -> None:
    """Keep the minima of the last `window`, rising from front to back (a monotonic queue):
    the front is the lowest reading within the window, the back the newest reading, so the
    rise within the window is back − front, whatever the message rate."""
    while history and history[-1][1] >= value:
        history.pop()
    history.append((at, value))
    while at - history[0][0] > window:
        history.popleft()


def remember_late(
    history: deque[tuple[datetime, float]], at: datetime, value: float, window: timedelta
) -> None:
    """A reading older than the newest one, put in its place in time: it matters only if it
    is the lowest of everything after it within the window of the newest reading (it may then
    be the start of a rise); older than that window it is history, and does not act."""
    if not history or history[-1][0] - at > window:
        return
    times = [when for when, _ in history]
    after = bisect.bisect_right(times, at)
    if after < len(history) and history[after][1] <= value:
        return  # a later reading is as low: the window's minima do not change
    start = after
    while start > 0 and history[start - 1][1] >= value:
        start -= 1
    kept = list(history)
    history.clear()
    history.extend([*kept[:start], (at, value), *kept[after:]])
