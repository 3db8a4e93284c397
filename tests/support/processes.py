"""The processes the tests and benchmarks start: a private Mosquitto, `facilities run` as
operators run it, and one-off `facilities` commands."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from facilities.mosquitto import PrivateBroker, free_port
from facilities.site import Site
from tests.support.paths import EXAMPLE_SITE
from tests.support.poll import WaitTimeoutError, wait_until

# Test-only users: an observer that reads everything, and a rogue client that may write
# anything under the prefix (what a stale ACL or a misconfigured broker would let through).
TEST_USERS = {
    "observer": ("topic read facilities/#",),
    "rogue": ("topic write facilities/#",),
}
# How often a starting service is asked whether it is healthy.
HEALTH_POLL_S = 0.05


def start_broker(
    workdir: Path, site: Site, *, extra_users: Mapping[str, tuple[str, ...]] = TEST_USERS
) -> PrivateBroker:
    """The shipped broker config on a free port, with the site's devices and `extra_users`."""
    return PrivateBroker(workdir, site, extra_users=dict(extra_users)).start()


def answers(port: int, path: str = "/healthz") -> bool:
    """Whether an HTTP server on loopback `port` answers `path` with 200 now."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_http(port: int, path: str = "/healthz", *, timeout_s: float = 30.0) -> None:
    """Wait until an HTTP server on loopback `port` answers `path` with 200."""
    wait_until(
        lambda: answers(port, path),
        timeout_s=timeout_s,
        what=f"an answer on 127.0.0.1:{port}{path}",
        interval_s=HEALTH_POLL_S,
    )


class ServiceProcess:
    """One `facilities run` process with its HTTP port, database and log file. It runs as the
    broker user `client_id` (made on first use): the broker takes the client id, and so the
    persistent session, from the user name (mosquitto.conf)."""

    def __init__(
        self,
        broker: PrivateBroker,
        db: Path | str,
        *,
        client_id: str,
        log: Path,
        site: Path = EXAMPLE_SITE,
        extra: tuple[str, ...] = (),
        log_level: str = "INFO",
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.port = free_port()
        self.db = db
        self.log = log
        self.argv = [
            sys.executable,
            "-m",
            "facilities",
            "--log-level",
            log_level,
            "run",
            "--site",
            str(site),
            "--broker",
            broker.service_url(client_id),
            "--db",
            str(db),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--connect-timeout",
            f"{connect_timeout_s:g}",
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(
        self, *, timeout_s: float = 20.0, interval_s: float = HEALTH_POLL_S
    ) -> "ServiceProcess":
        """Start it and wait until /healthz says 200 (asked every `interval_s`); AssertionError
        with the log's tail if it exits or is not healthy within `timeout_s`."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=log)
        try:
            wait_until(self._healthy, timeout_s=timeout_s, interval_s=interval_s)
        except WaitTimeoutError:
            raise AssertionError(
                f"service not healthy in {timeout_s} s: {self.log.read_text()[-2000:]}"
            ) from None
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"service exited: {self.log.read_text()[-2000:]}")
        return answers(self.port)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, *, timeout_s: float = 10.0) -> tuple[int, float]:
        """SIGTERM; return the exit code and the seconds it took to exit."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout_s)
        return code, time.monotonic() - started


def run_cli(
    *args: str,
    timeout_s: float = 60.0,
    cwd: Path | None = None,
    variables: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`facilities ARGS…` to its end; its exit code and output. The process sees none of the
    caller's `FACILITIES_*` variables, only `variables`."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("FACILITIES_")}
    return subprocess.run(
        [sys.executable, "-m", "facilities", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        cwd=cwd,
        env={**inherited, "PYTHONUNBUFFERED": "1", **(variables or {})},
    )
