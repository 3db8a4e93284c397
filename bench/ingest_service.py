"""The service's side of the ingest benchmark: `facilities run` flooded and backlogged."""

# bench/ingest.py measures the broker's own ceilings and prints both.

import collections
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Protocol

from bench.rig import ROOT
from facilities.mosquitto import PrivateBroker
from facilities.settings import DEFAULT_CONNECT_TIMEOUT_S
from tests.support.poll import wait_until
from tests.support.processes import ServiceProcess

SITE = ROOT / "site.example.toml"
# The service had no limit to become healthy before; a minute is far more than it takes.
START_TIMEOUT_S = 60.0


class Bench(Protocol):
    """What the service's runs need of the benchmark (bench/ingest.py)."""

    workdir: Path
    messages: int
    broker: PrivateBroker

    def new_service(self, tag: str) -> "Service": ...

    def publish(self, ports: int) -> dict[str, float]: ...

    def start_publisher(self, ports: int) -> "subprocess.Popen[str]": ...


class Service:
    """`facilities run` as a subprocess, with its own database, broker user and so persistent
    session."""

    def __init__(self, bench: Bench, client_id: str) -> None:
        self.bench = bench
        self.client_id = client_id
        self.db = bench.workdir / f"{client_id}.db"
        self.runner = ServiceProcess(
            bench.broker,
            self.db,
            client_id=client_id,
            log=bench.workdir / f"{client_id}.log",
            site=SITE,
            log_level="WARNING",
            connect_timeout_s=DEFAULT_CONNECT_TIMEOUT_S,
        )
        self.port = self.runner.port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait until healthy; return the seconds that took."""
        started = time.perf_counter()
        self.process = self.runner.start(timeout_s=START_TIMEOUT_S, interval_s=0.01).process
        return time.perf_counter() - started

    def stored(self) -> int:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM station_samples").fetchone()[0])

    def wait_stored(self, count: int, timeout_s: float = 300) -> float:
        """Wait until `count` samples are stored; when that was (perf_counter)."""
        wait_until(
            lambda: self.stored() >= count,
            timeout_s=timeout_s,
            what=f"{self.client_id}: {count} stored",
            interval_s=0.01,
        )
        return time.perf_counter()

    def peak_rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def service_flood(bench: Bench, ports: int, *, profile: Path | None = None) -> tuple[float, float]:
    service = bench.new_service(f"flood{ports}")
    service.start()
    spy = None
    if profile is not None:
        spy = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "py-spy"),
                "record",
                "--pid",
                str(service.process.pid),
                "--format",
                "raw",
                "--output",
                str(profile),
                "--rate",
                "250",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
    started = time.perf_counter()
    publisher = bench.start_publisher(ports)
    done = service.wait_stored(bench.messages)
    publisher.wait(60)
    rss = service.peak_rss_mb()
    if spy is not None:
        spy.send_signal(2)
        spy.wait(30)
    service.stop()
    return bench.messages / (done - started), rss


def service_backlog(bench: Bench, ports: int) -> tuple[float, float]:
    """Drain rate once the service is up (from its first commit to the last), and the
    seconds from launch to healthy."""
    service = bench.new_service(f"backlog{ports}")
    service.start()  # creates the persistent session
    service.stop()
    bench.publish(ports)  # the service is down; devices keep publishing
    startup = service.start()
    first = service.wait_stored(1)
    already = service.stored()
    done = service.wait_stored(bench.messages)
    service.stop()
    return (bench.messages - already) / max(done - first, 1e-9), startup


def summarize_profile(path: Path, top: int = 18) -> list[tuple[float, str]]:
    """Self time per leaf frame, as shares of all samples."""
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        leaf = frames[-1]
        leaves[leaf] += int(count)
        total += int(count)
    return [(n / total, frame) for frame, n in leaves.most_common(top)]
