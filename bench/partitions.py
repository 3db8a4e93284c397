"""Scaling by processes: two `facilities run` processes, each with its own MQTT session and
part of the stations, writing to one database, against one process with all of them, in the
same run.

Run on demand (`.venv/bin/python bench/partitions.py --help`); never in `make test`.

How the devices are split (`--split`):
  partition  (the default) each process is `facilities run --partition K/2`: it subscribes to
             its own stations' topics (the example district splits 11 / 9 by CRC-32), and
             publishes live copies of them for the other (docs/scaling.md): what a deployment
             runs;
  prefix     the prototype measured before `--partition` existed: stations cs-01..cs-10
             publish under one topic prefix and cs-11..cs-20 under another, each process has
             one prefix (`--topic-prefix`) and the whole site file; no copies.

Cases (N messages of 10 ports unless told otherwise):
  backlog  both sessions exist, both processes are down while N messages are published (half
           to each prefix), both start at once: drain from the first row to the last;
  flood    both processes run, two publishers send N/2 each at once: rate from the first
           publish to the last row.
Both print the rate, CPU µs per stored message (the processes' user + system, summed) and the
peak RSS of each process; one process with all N messages is measured first, same broker.

`--store postgresql`: the processes share one fresh database of a private PostgreSQL per
measurement (its URL as their `--db`), and the server's CPU per stored message is printed
beside theirs (bench/stores.py); the default is one SQLite file.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import Bench  # noqa: E402
from bench.ingest_service import Service  # noqa: E402
from bench.rig import PREFIXES  # noqa: E402
from bench.stores import STORES, Store, open_store  # noqa: E402

STATIONS = 20
# One broker user per publisher: the broker takes a client's id from its user name, so two
# publishers of one user would take the connection from each other (and send again).
PUBLISHER_USERS = ("bench-any-prefix-0", "bench-any-prefix-1")


class Instances:
    """The processes of one measurement, sharing one database."""

    def __init__(self, bench: Bench, store: Store, tag: str, count: int, split: str) -> None:
        bench.run_id += 1
        db = store.new_database(f"{tag}-{bench.run_id}")
        self.bench = bench
        self.store = store
        self.services = [
            Service(
                bench,
                f"bench-{tag}-{bench.run_id}-{k}",
                store=store,
                prefix=PREFIXES[k] if split == "prefix" else PREFIXES[0],
                db=db,
                extra=("--partition", f"{k}/{count}") if split == "partition" and count > 1 else (),
            )
            for k in range(count)
        ]

    def start(self) -> None:
        """Start every process at once (each is healthy when this returns)."""
        for service in self.services:
            service.add_user()  # one at a time (a reload each)
        threads = [threading.Thread(target=s.start) for s in self.services]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def stop(self) -> None:
        for service in self.services:
            service.stop()
            self.bench.forget_session(service.client_id)

    def stored(self) -> int:
        return self.services[0].stored()  # one database

    def wait_stored(self, count: int) -> float:
        return self.services[0].wait_stored(count)

    def cpu_s(self) -> float:
        return sum(s.cpu_s() for s in self.services)

    def server_cpu_s(self) -> float | None:
        return self.store.server_cpu_s()

    def rss(self) -> str:
        return " + ".join(f"{s.peak_rss_mb():.0f}" for s in self.services)


def publish_halves(
    bench: Bench, count: int, messages: int, ports: int, *, wait: bool, split: str
) -> list["subprocess.Popen[str]"]:
    """`messages` split over `count` publishers, each its share of the stations (under its
    own prefix when the split is by prefix); started at once; with `wait`, returned once
    every PUBACK is in."""
    share = STATIONS // count
    publishers = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "publisher.py"),
                "--port",
                str(bench.broker.port),
                "--user",
                PUBLISHER_USERS[k],
                f"--password={bench.broker.credentials[PUBLISHER_USERS[k]]}",
                "--messages",
                str(messages // count),
                "--ports",
                str(ports),
                "--prefix",
                PREFIXES[k] if split == "prefix" else PREFIXES[0],
                "--stations",
                str(share),
                "--first-station",
                str(1 + k * share),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(count)
    ]
    if wait:
        for publisher in publishers:
            publisher.communicate(timeout=300)
            if publisher.returncode != 0:
                raise RuntimeError(f"a publisher exited {publisher.returncode}")
    return publishers


class Measured(NamedTuple):
    rate: float  # stored messages per second
    cpu_us: float  # the processes' user + system CPU per stored message
    server_us: float | None  # the database server's (None: SQLite, inside the processes)
    rss: str  # each process's peak RSS, MB


def _per_message(before: float | None, after: float | None, messages: int) -> float | None:
    return None if before is None or after is None else (after - before) / max(messages, 1) * 1e6


def backlog(bench: Bench, store: Store, count: int, ports: int, split: str) -> Measured:
    instances = Instances(bench, store, f"backlog{ports}x{count}", count, split)
    instances.start()  # creates the sessions (and the database)
    for service in instances.services:
        service.stop()
    publish_halves(bench, count, bench.messages, ports, wait=True, split=split)
    instances.start()
    instances.wait_stored(1)
    cpu, server, already = instances.cpu_s(), instances.server_cpu_s(), instances.stored()
    first = time.perf_counter()
    done = instances.wait_stored(bench.messages)
    cpu = instances.cpu_s() - cpu
    server_us = _per_message(server, instances.server_cpu_s(), bench.messages - already)
    rss = instances.rss()
    instances.stop()
    drained = bench.messages - already
    return Measured(drained / max(done - first, 1e-9), cpu / max(drained, 1) * 1e6, server_us, rss)


def flood(bench: Bench, store: Store, count: int, ports: int, split: str) -> Measured:
    instances = Instances(bench, store, f"flood{ports}x{count}", count, split)
    instances.start()
    cpu, server = instances.cpu_s(), instances.server_cpu_s()
    started = time.perf_counter()
    publishers = publish_halves(bench, count, bench.messages, ports, wait=False, split=split)
    done = instances.wait_stored(bench.messages)
    cpu = instances.cpu_s() - cpu
    server_us = _per_message(server, instances.server_cpu_s(), bench.messages)
    for publisher in publishers:
        publisher.communicate(timeout=60)
    rss = instances.rss()
    instances.stop()
    return Measured(bench.messages / (done - started), cpu / bench.messages * 1e6, server_us, rss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--ports", type=int, nargs="+", default=[10])
    parser.add_argument(
        "--cases", nargs="+", choices=("flood", "backlog"), default=["backlog", "flood"]
    )
    parser.add_argument(
        "--store",
        choices=STORES,
        default="sqlite",
        help="the database the processes share: a SQLite file, or a fresh database of a"
        " private PostgreSQL per measurement",
    )
    parser.add_argument(
        "--split",
        choices=("partition", "prefix"),
        default="partition",
        help="how two processes share the stations: `facilities run --partition K/2` (with live"
        " copies), or the earlier prototype's topic prefixes",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="facilities-partitions-"))
    bench = Bench(workdir, args.messages)
    store = open_store(args.store, workdir)
    try:
        for user in PUBLISHER_USERS:
            bench.broker.add_user(user, ("topic readwrite #",))
        print(
            f"{args.messages} QoS 1 messages per run; store {store.name}; split by {args.split};"
            f" broker on port "
            f"{bench.broker.port}; {workdir}"
        )
        print(
            f"{'ports':>5} {'case':>8} {'processes':>9} {'msg/s':>8} {'CPU us/msg':>10} "
            f"{'DB us/msg':>9}  RSS MB"
        )
        for ports in args.ports:
            for case in args.cases:
                measure = backlog if case == "backlog" else flood
                for count in (1, 2, 1, 2):  # alternated: the machine's drift shows
                    run = measure(bench, store, count, ports, args.split)
                    server = "-" if run.server_us is None else f"{run.server_us:.1f}"
                    print(
                        f"{ports:>5} {case:>8} {count:>9} {run.rate:>8.0f} {run.cpu_us:>10.1f} "
                        f"{server:>9}  {run.rss}",
                        flush=True,
                    )
    finally:
        store.stop()
        bench.broker.stop()
    print(json.dumps({"workdir": str(workdir)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
