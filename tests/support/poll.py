"""Waiting for what a real broker, service or browser will make true: poll until a deadline."""

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# A check is cheap (a dict lookup, a small query): 10 ms keeps waits short without spinning.
INTERVAL_S = 0.01


class WaitTimeoutError(AssertionError):
    """Nothing made the awaited condition true in time (an assertion: the test fails)."""

    def __init__(self, what: str, timeout_s: float) -> None:
        super().__init__(f"timed out after {timeout_s} s waiting for {what}")


def wait_until(
    check: Callable[[], T],
    *,
    timeout_s: float = 10.0,
    what: str = "condition",
    interval_s: float = INTERVAL_S,
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """Call `check` until it returns something true, and return that. An exception of a type
    in `ignoring` counts as false (a server not listening yet). WaitTimeoutError after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = check()
        except ignoring:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise WaitTimeoutError(what, timeout_s)
        time.sleep(interval_s)


async def wait_for(
    check: Callable[[], T | Awaitable[T]],
    *,
    timeout_s: float = 10.0,
    what: str = "condition",
    interval_s: float = INTERVAL_S,
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """`wait_until` for a coroutine: sleeps without blocking the loop, and `check` may be a
    coroutine function (one that asks the API)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            answer = check()
            found = await answer if inspect.isawaitable(answer) else answer
        except ignoring:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise WaitTimeoutError(what, timeout_s)
        await asyncio.sleep(interval_s)
