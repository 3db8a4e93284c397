"""The service as operators run it: `python -m facilities run` in its own process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from facilities.mosquitto import PrivateBroker, free_port
from tests.conftest import EXAMPLE_SITE


class ServiceProcess:
    """One `facilities run` process with its HTTP port, database and log file. It runs as the
    broker user `client_id` (made on first use): the broker takes the client id, and so the
    persistent session, from the user name (mosquitto.conf)."""

    def __init__(
        self,
        broker: PrivateBroker,
        db: Path,
        *,
        client_id: str,
        log: Path,
        site: Path = EXAMPLE_SITE,
        extra: tuple[str, ...] = (),
        log_level: str = "INFO",
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
            "10",
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 20.0) -> "ServiceProcess":
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"service exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(
            f"service not healthy in {timeout_s} s: {self.log.read_text()[-2000:]}"
        )

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


def run_cli(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "facilities", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env=env,
    )
