"""Keeps the fast/slow split honest: a test not marked `slow` may not start what makes a test
slow (`facilities run`, `demo` or `simulate`, Chromium, Prometheus), so `make test-fast`
never does."""

import os
import sys
from collections.abc import Iterator, Sequence

import pytest

# `facilities` commands that start the service or the devices (the others end at once).
SLOW_COMMANDS = frozenset({"run", "demo", "simulate"})
SLOW_PROGRAMS = frozenset({"chromium", "chromedriver", "prometheus"})


def slow_argv(argv: Sequence[str]) -> bool:
    """Whether `argv` starts a process that only a slow test may start."""
    names = [os.path.basename(str(arg)) for arg in argv]
    if names and names[0] in SLOW_PROGRAMS:
        return True
    if "facilities" not in names:
        return False
    return _command(argv[names.index("facilities") + 1 :]) in SLOW_COMMANDS


def _command(args: Sequence[str]) -> str | None:
    """The subcommand: the first word past the global options (`--log-level INFO`)."""
    words = iter(args)
    for word in words:
        if not word.startswith("-"):
            return word
        if "=" not in word:
            next(words, None)  # the option's value
    return None


class Guard:
    """Refuses a slow process while a test not marked `slow` runs (an audit hook cannot be
    removed, so it stays installed and is armed per test)."""

    def __init__(self) -> None:
        self.test: str | None = None

    def __call__(self, event: str, args: tuple[object, ...]) -> None:
        if event != "subprocess.Popen" or self.test is None:
            return
        argv = args[1]
        argv = [argv] if isinstance(argv, str | bytes) else list(argv)  # type: ignore[call-overload]
        if slow_argv([os.fsdecode(a) for a in argv]):
            command = " ".join(os.fsdecode(a) for a in argv)
            raise AssertionError(
                f"{self.test} starts `{command[:160]}`: mark it slow (pytest.mark.slow),"
                " or `make test-fast` would run it"
            )


GUARD = Guard()


def pytest_configure(config: pytest.Config) -> None:
    sys.addaudithook(GUARD)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    GUARD.test = None if item.get_closest_marker("slow") else item.nodeid
    try:
        return (yield)
    finally:
        GUARD.test = None
