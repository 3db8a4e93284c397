"""Ingest benchmark: raw `mosquitto_sub` delivery against the service's commit rate, same run.

Run on demand (`make bench`, or `.venv/bin/python bench/ingest.py --help`); never in
`make test`. Starts a private broker from the shipped mosquitto.conf, then for 1 and 10 ports
per message measures:
  flood    a publisher floods N QoS 1 messages while the consumer is connected;
  backlog  N messages are queued while the consumer is away, then it connects and drains.
The consumer is first `mosquitto_sub` (the baseline: receive and ack, nothing else), then the
service (`facilities run`: validate, store, commit, then ack). Prints rates, their ratio and
the service's peak RSS; `--profile` samples the service with py-spy during a flood.
`--store sqlite postgresql` measures the service on each store in turn against the same raw
figure (a private PostgreSQL, a fresh database per run, its server's CPU per message beside
the service's: bench/stores.py); a store named twice is measured twice, alternating.
`--repeat N` runs the whole set N times (raw and paho alone again each time) and ends with
each row's median: on a shared 2-core machine one run's rates move by a fifth or more.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest_service import (  # noqa: E402
    Service,
    service_backlog,
    service_flood,
    summarize_profile,
)
from bench.publisher import payload  # noqa: E402
from bench.stores import STORES, Store, open_store  # noqa: E402
from facilities.mqtt.topics import Topics  # noqa: E402
from facilities.site import load_site  # noqa: E402
from tests.support.processes import start_broker  # noqa: E402

SITE = ROOT / "site.example.toml"
TOPICS = Topics()
BENCH_USER = (f"topic readwrite {TOPICS.everything()}",)


class Measured(NamedTuple):
    """One row of the table: the service (of `tree`, "" for this one) against raw, same run."""

    ports: int
    case: str
    store: str
    tree: str
    raw: float
    rate: float
    cpu_us: float
    rss_mb: float


class Bench:
    def __init__(self, workdir: Path, messages: int) -> None:
        self.workdir = workdir
        self.messages = messages
        self.broker = start_broker(
            workdir / "broker", load_site(SITE), extra_users={"bench": BENCH_USER}
        )
        self.run_id = 0
        self.last_publish_rate = 0.0

    # -- helpers ---------------------------------------------------------------------------

    def publish(self, ports: int) -> dict[str, float]:
        out = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "publisher.py"),
                "--port",
                str(self.broker.port),
                "--user",
                "bench",
                f"--password={self.broker.credentials['bench']}",  # it may start with "-"
                "--messages",
                str(self.messages),
                "--ports",
                str(ports),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        result: dict[str, float] = json.loads(out.stdout)
        return result

    def start_publisher(self, ports: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "publisher.py"),
                "--port",
                str(self.broker.port),
                "--user",
                "bench",
                f"--password={self.broker.credentials['bench']}",  # it may start with "-"
                "--messages",
                str(self.messages),
                "--ports",
                str(ports),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )

    def reader(self, client_id: str) -> str:
        """A broker user named `client_id`, made on first use: the broker takes a client's id
        from its user name (mosquitto.conf), so each session needs a user of its own."""
        if client_id not in self.broker.credentials:
            self.broker.add_user(client_id, BENCH_USER)
        return self.broker.credentials[client_id]

    def sub_argv(self, client_id: str, *extra: str) -> list[str]:
        return [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.broker.port),
            "-u",
            client_id,
            "-P",
            self.reader(client_id),
            "-i",
            client_id,
            "-q",
            "1",
            "-c",
            "-t",
            TOPICS.station("+", "#"),
            *extra,
        ]

    def forget_session(self, client_id: str) -> None:
        """Drop `client_id`'s persistent session (a clean-session connect): a session left
        behind would queue every later run's messages, and the broker's autosaves of that
        growing queue would slow the runs after it (a later service measured slower than an
        earlier one for that alone)."""
        argv = self.sub_argv(client_id, "-E")
        argv.remove("-c")
        subprocess.run(argv, check=True, timeout=60)

    def new_service(self, tag: str, *, store: Store, tree: Path | None = None) -> Service:
        self.run_id += 1
        return Service(self, f"bench-{tag}-{self.run_id}", store=store, tree=tree)

    # -- raw baseline ----------------------------------------------------------------------

    def raw_flood(self, ports: int) -> float:
        client_id = f"raw-flood-{ports}-{time.time_ns()}"
        subprocess.run(self.sub_argv(client_id, "-E"), check=True)  # create the session
        sub = subprocess.Popen(
            self.sub_argv(client_id, "-C", str(self.messages)), stdout=subprocess.DEVNULL
        )
        time.sleep(0.5)  # let it subscribe (its session exists, so nothing is lost anyway)
        started = time.perf_counter()
        publisher = self.start_publisher(ports)
        sub.wait(300)
        elapsed = time.perf_counter() - started
        out, _ = publisher.communicate(timeout=60)
        self.last_publish_rate = self.messages / json.loads(out)["seconds"]
        self.forget_session(client_id)
        return self.messages / elapsed

    def raw_backlog(self, ports: int) -> float:
        client_id = f"raw-backlog-{ports}-{time.time_ns()}"
        subprocess.run(self.sub_argv(client_id, "-E"), check=True)
        self.publish(ports)
        started = time.perf_counter()
        subprocess.run(
            self.sub_argv(client_id, "-C", str(self.messages)),
            stdout=subprocess.DEVNULL,
            check=True,
            timeout=300,
        )
        rate = self.messages / (time.perf_counter() - started)
        self.forget_session(client_id)
        return rate


def paho_backlog(bench: Bench, ports: int) -> float:
    """The ceiling of any paho-based consumer: drain the backlog, ack in on_message, no work."""
    import threading

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    client_id = f"paho-backlog-{ports}-{time.time_ns()}"

    def client() -> paho.Client:
        made = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=False,
        )
        made.username_pw_set(client_id, bench.reader(client_id))
        return made

    subprocess.run(bench.sub_argv(client_id, "-E"), check=True)  # create the session
    bench.publish(ports)
    done, count, lost = threading.Event(), [0], []

    def on_message(_c: paho.Client, _u: object, _m: paho.MQTTMessage) -> None:
        count[0] += 1
        if count[0] >= bench.messages:
            done.set()

    def on_disconnect(_c: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if not done.is_set():
            lost.append(reason)
            done.set()

    consumer = client()
    consumer.on_message = on_message
    consumer.on_disconnect = on_disconnect
    started = time.perf_counter()
    consumer.connect("127.0.0.1", bench.broker.port)
    consumer.loop_start()
    drained = done.wait(300) and not lost
    elapsed = time.perf_counter() - started
    consumer.disconnect()
    consumer.loop_stop()
    bench.forget_session(client_id)
    if not drained:
        # Seen once here: the broker logged the client closing its connection mid-drain, and
        # a rate from a 300 s wait would have been printed as the ceiling.
        why = f"disconnected ({lost[0]})" if lost else "timed out"
        print(f"bench: paho alone {why} after {count[0]} messages; no figure", file=sys.stderr)
        return float("nan")
    return bench.messages / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--ports", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--profile", action="store_true", help="py-spy the largest flood")
    parser.add_argument(
        "--cases", nargs="+", choices=("flood", "backlog"), default=["flood", "backlog"]
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="TREE",
        help="also run the service from this checkout (its `facilities` package), in the same"
        " run, for a before/after table",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run everything N times and end with each row's median",
    )
    parser.add_argument(
        "--store",
        nargs="+",
        choices=STORES,
        default=["sqlite"],
        help="the service's database, each in turn against the same raw figure (a private"
        " PostgreSQL for postgresql, a fresh database per run)",
    )
    args = parser.parse_args()
    if shutil.which("mosquitto_sub") is None:
        print("bench: mosquitto_sub not found (apt-get install mosquitto-clients)")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="facilities-bench-"))
    bench = Bench(workdir, args.messages)
    stores: dict[str, Store] = {}
    try:
        for name in args.store:
            if name not in stores:
                stores[name] = open_store(name, workdir)
        print(
            f"{args.messages} QoS 1 messages per run; broker on port {bench.broker.port}; "
            f"work dir {workdir}"
        )
        print(
            f"{'ports':>5} {'bytes':>6} {'case':>8} {'store':>10} {'raw msg/s':>10} "
            f"{'service':>10} {'ratio':>6} {'CPU us/msg':>10} {'DB us/msg':>9} {'RSS MB':>7}"
        )
        measured: list[Measured] = []
        for turn in range(args.repeat):
            if args.repeat > 1:
                print(f"-- run {turn + 1} of {args.repeat}", flush=True)
            for ports in args.ports:
                profile = (
                    workdir / f"profile-{ports}.txt"
                    if args.profile and ports == max(args.ports) and turn == 0
                    else None
                )
                measured += _run_ports(
                    bench,
                    ports,
                    cases=args.cases,
                    stores=[stores[name] for name in args.store],
                    profile=profile,
                    before=args.before,
                )
        if args.repeat > 1:
            _print_medians(measured)
    finally:
        for store in stores.values():
            store.stop()
        bench.broker.stop()
    return 0


def _run_ports(
    bench: Bench,
    ports: int,
    *,
    cases: list[str],
    stores: list[Store],
    profile: Path | None,
    before: Path | None,
) -> list[Measured]:
    """The flood and backlog rows of one message size (`ports` per message), one per store
    in `stores`' order, and where the time goes when `profile` is asked for (on the first
    store). With `before`, that checkout's service is measured first, against the same raw
    figure."""
    size = len(payload(0, ports))
    backlog_profile = profile.with_suffix(".backlog.txt") if profile else None
    trees: list[tuple[str, Path | None]] = [("before", before)] if before else []
    trees.append(("", None))
    runs = [(tag, tree, store, k == 0) for k, store in enumerate(stores) for tag, tree in trees]
    measured = []
    if "flood" in cases:
        raw = bench.raw_flood(ports)
        publish_rate = bench.last_publish_rate
        for tag, tree, store, first in runs:
            spied = profile if tree is None and first else None
            svc = service_flood(bench, ports, store=store, profile=spied, tree=tree)
            measured.append(
                Measured(ports, "flood", store.name, tag, raw, svc.rate, svc.cpu_us, svc.rss_mb)
            )
            print(
                f"{ports:>5} {size:>6} {'flood':>8} {store.name:>10} {raw:>10.0f} "
                f"{svc.rate:>10.0f} {svc.rate / raw:>6.1%} {svc.cpu_us:>10.1f} "
                f"{svc.server_column():>9} {svc.rss_mb:>7.0f}"
                f"  {tag} (publisher alone: {publish_rate:.0f} msg/s)",
                flush=True,
            )
    if "backlog" in cases:
        raw = bench.raw_backlog(ports)
        ceiling = paho_backlog(bench, ports)
        for tag, tree, store, first in runs:
            spied = backlog_profile if tree is None and first else None
            svc, startup = service_backlog(bench, ports, store=store, tree=tree, profile=spied)
            measured.append(
                Measured(ports, "backlog", store.name, tag, raw, svc.rate, svc.cpu_us, svc.rss_mb)
            )
            print(
                f"{ports:>5} {size:>6} {'backlog':>8} {store.name:>10} {raw:>10.0f} "
                f"{svc.rate:>10.0f} {svc.rate / raw:>6.1%} {svc.cpu_us:>10.1f} "
                f"{svc.server_column():>9} {svc.rss_mb:>7.0f}"
                f"  {tag} (paho alone: {ceiling:.0f} msg/s = {ceiling / raw:.1%} of raw; "
                f"service start-up {startup:.1f} s, not counted)",
                flush=True,
            )
    for case, path in (("flood", profile), ("backlog", backlog_profile)):
        if path is not None and path.exists():
            print(f"\nwhere the service's time goes (py-spy, {case}, self time per frame):")
            for share, frame in summarize_profile(path):
                print(f"  {share:6.1%}  {frame}")
            print()
    return measured


def _print_medians(measured: list[Measured]) -> None:
    """Per row (ports, case, store, tree): the median of each figure over the runs, and the
    range of the ratio to raw (each run's ratio against its own raw figure)."""
    rows: dict[tuple[int, str, str, str], list[Measured]] = {}
    for m in measured:
        rows.setdefault((m.ports, m.case, m.store, m.tree), []).append(m)
    print(f"\nmedians of {max(len(runs) for runs in rows.values())} runs")
    print(
        f"{'ports':>5} {'case':>8} {'store':>10} {'raw msg/s':>10} {'service':>10} {'ratio':>6}"
        f" {'ratio range':>13} {'CPU us/msg':>10} {'RSS MB':>7}"
    )
    for (ports, case, store, tree), runs in rows.items():
        ratios = [m.rate / m.raw for m in runs]
        print(
            f"{ports:>5} {case:>8} {store:>10} {statistics.median(m.raw for m in runs):>10.0f}"
            f" {statistics.median(m.rate for m in runs):>10.0f} {statistics.median(ratios):>6.1%}"
            f" {min(ratios):>6.1%}-{max(ratios):<6.1%} "
            f"{statistics.median(m.cpu_us for m in runs):>10.1f}"
            f" {max(m.rss_mb for m in runs):>7.0f}  {tree}",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
