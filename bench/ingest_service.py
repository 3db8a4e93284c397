"""The service's side of the ingest benchmark: `facilities run` flooded and backlogged."""

# bench/ingest.py measures the broker's own ceilings and prints both.

import collections
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from bench.rig import ROOT
from bench.stores import Store
from facilities.mosquitto import PrivateBroker, free_port
from facilities.mqtt.topics import DEFAULT_PREFIX, Topics

SITE = ROOT / "site.example.toml"
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


class Bench(Protocol):
    """What the service's runs need of bench/ingest.py's Bench (a Protocol, so that the two
    modules do not import each other)."""

    workdir: Path
    messages: int
    broker: PrivateBroker

    def publish(self, ports: int) -> dict[str, float]: ...

    def start_publisher(self, ports: int) -> "subprocess.Popen[str]": ...

    def new_service(self, tag: str, *, store: Store, tree: Path | None = None) -> "Service": ...

    def forget_session(self, client_id: str) -> None: ...


@dataclass(frozen=True)
class Run:
    """One run of the service: its rate, its CPU per stored message, its peak RSS."""

    rate: float  # stored messages per second
    cpu_us: float  # user + system CPU of the service process per stored message
    rss_mb: float  # peak resident set (VmHWM)
    # the database server's CPU per stored message over the same span (None: SQLite, which
    # runs inside the service and so is in `cpu_us`)
    server_cpu_us: float | None = None

    def server_column(self) -> str:
        return "-" if self.server_cpu_us is None else f"{self.server_cpu_us:.1f}"


class Service:
    """`facilities run` as a subprocess, with its own database (in `store`), broker user and
    so persistent session."""

    def __init__(
        self,
        bench: Bench,
        client_id: str,
        *,
        store: Store,
        tree: Path | None = None,
        prefix: str = DEFAULT_PREFIX,
        db: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.bench = bench
        self.tree = tree  # another checkout's `facilities` to run (an A/B in one run)
        self.client_id = client_id
        self.prefix = prefix  # bench/partitions.py: each instance its own devices' topics
        self.extra = tuple(extra)  # more options of `facilities run` (`--partition K/N`)
        self.store = store
        # a SQLite path or a PostgreSQL URL; bench/partitions.py gives its instances one
        self.db = db or store.new_database(client_id)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        # another checkout reads its own example site (the file's form has grown since)
        own_site = None if tree is None else tree / "site.example.toml"
        self.site = own_site if own_site is not None and own_site.exists() else SITE

    def start(self) -> float:
        """Start and wait until healthy; return the seconds that took."""
        started = time.perf_counter()
        log = (self.bench.workdir / f"{self.client_id}.log").open("ab")
        env = dict(os.environ)
        if self.tree is not None:
            env["PYTHONPATH"] = str(self.tree)  # ahead of the editable install
        broker = self.bench.broker
        self.add_user()
        self.process = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "facilities"),
                "--log-level",
                "WARNING",
                "run",
                "--site",
                str(self.site),
                "--topic-prefix",
                self.prefix,
                "--broker",
                broker.url(self.client_id),
                "--db",
                self.db,
                "--listen",
                f"127.0.0.1:{self.port}",
                *self.extra,
            ],
            stdout=log,
            stderr=log,
            env=env,
        )
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                log_path = self.bench.workdir / f"{self.client_id}.log"
                last = log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise RuntimeError(f"{self.client_id} exited {self.process.returncode}: {last}")
            time.sleep(0.01)

    def add_user(self) -> None:
        """Its broker user (the service's ACL for its prefix), made on first use; one at a
        time: the broker reloads its users on SIGHUP."""
        self.bench.broker.service_url(self.client_id, Topics(self.prefix))

    def stored(self) -> int:
        return self.store.stored(self.db)

    def wait_stored(self, count: int, timeout_s: float = 300) -> float:
        deadline = time.perf_counter() + timeout_s
        while self.stored() < count:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.client_id}: only {self.stored()} of {count} stored")
            time.sleep(self.store.poll_s)
        return time.perf_counter()

    def peak_rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_s(self) -> float:
        """User + system CPU seconds of the service process so far (all its threads), from
        /proc/<pid>/stat (fields 14 and 15, in clock ticks)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def service_flood(
    bench: Bench,
    ports: int,
    *,
    store: Store,
    profile: Path | None = None,
    tree: Path | None = None,
) -> Run:
    service = bench.new_service(f"flood{ports}", store=store, tree=tree)
    service.start()
    spy = _spy(service, profile) if profile is not None else None
    started, cpu, server = time.perf_counter(), service.cpu_s(), store.server_cpu_s()
    publisher = bench.start_publisher(ports)
    done = service.wait_stored(bench.messages)
    cpu = service.cpu_s() - cpu
    server_cpu = _spent(server, store.server_cpu_s())
    publisher.wait(60)
    rss = service.peak_rss_mb()
    if spy is not None:
        spy.send_signal(2)
        spy.wait(30)
    service.stop()
    bench.forget_session(service.client_id)
    return Run(
        bench.messages / (done - started),
        cpu / bench.messages * 1e6,
        rss,
        None if server_cpu is None else server_cpu / bench.messages * 1e6,
    )


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _spy(service: Service, profile: Path) -> "subprocess.Popen[bytes]":
    """py-spy sampling `service` (all threads, 250 Hz) into `profile`, started."""
    spy = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "py-spy"),
            "record",
            "--pid",
            str(service.pid),
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
    return spy


def service_backlog(
    bench: Bench,
    ports: int,
    *,
    store: Store,
    tree: Path | None = None,
    profile: Path | None = None,
) -> tuple[Run, float]:
    """Drain rate once the service is up (from its first commit to the last), its CPU per
    message over the same span (and its database server's), and the seconds from launch to
    healthy."""
    service = bench.new_service(f"backlog{ports}", store=store, tree=tree)
    service.start()  # creates the persistent session
    service.stop()
    bench.publish(ports)  # the service is down; devices keep publishing
    startup = service.start()
    spy = _spy(service, profile) if profile is not None else None
    first = service.wait_stored(1)
    cpu, server, already = service.cpu_s(), store.server_cpu_s(), service.stored()
    done = service.wait_stored(bench.messages)
    cpu = service.cpu_s() - cpu
    server_cpu = _spent(server, store.server_cpu_s())
    rss = service.peak_rss_mb()
    if spy is not None:
        spy.send_signal(2)
        spy.wait(30)
    service.stop()
    bench.forget_session(service.client_id)
    drained = bench.messages - already
    run = Run(
        drained / max(done - first, 1e-9),
        cpu / max(drained, 1) * 1e6,
        rss,
        None if server_cpu is None else server_cpu / max(drained, 1) * 1e6,
    )
    return run, startup


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
