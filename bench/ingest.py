"""Ingest benchmark: raw `mosquitto_sub` delivery against the service's commit rate, same run.

Run on demand (`make bench`, or `.venv/bin/python bench/ingest.py --help`); never in
`make test`. Starts a private broker from the shipped mosquitto.conf, then for 1 and 10 ports
per message measures:
  flood    a publisher floods N QoS 1 messages while the consumer is connected;
  backlog  N messages are queued while the consumer is away, then it connects and drains.
The consumer is first `mosquitto_sub` (the baseline: receive and ack, nothing else), then the
service (`facilities run`: validate, store, commit, then ack). Prints rates, their ratio and
the service's peak RSS; `--profile` samples the service with py-spy during a flood.
"""

import argparse
import collections
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.publisher import payload  # noqa: E402
from facilities.mqtt.topics import Topics  # noqa: E402
from facilities.settings import DEFAULT_CONNECT_TIMEOUT_S  # noqa: E402
from facilities.site import load_site  # noqa: E402
from tests.support.poll import wait_until  # noqa: E402
from tests.support.processes import ServiceProcess, start_broker  # noqa: E402

SITE = ROOT / "site.example.toml"
TOPICS = Topics()
BENCH_USER = (f"topic readwrite {TOPICS.everything()}",)
# The service had no limit to become healthy before; a minute is far more than it takes.
START_TIMEOUT_S = 60.0


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
                "--password",
                self.broker.credentials["bench"],
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
                "--password",
                self.broker.credentials["bench"],
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

    def new_service(self, tag: str) -> "Service":
        self.run_id += 1
        return Service(self, f"bench-{tag}-{self.run_id}")

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
        return self.messages / (time.perf_counter() - started)


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
    done, count = threading.Event(), [0]

    def on_message(_c: paho.Client, _u: object, _m: paho.MQTTMessage) -> None:
        count[0] += 1
        if count[0] >= bench.messages:
            done.set()

    consumer = client()
    consumer.on_message = on_message
    started = time.perf_counter()
    consumer.connect("127.0.0.1", bench.broker.port)
    consumer.loop_start()
    done.wait(300)
    elapsed = time.perf_counter() - started
    consumer.disconnect()
    consumer.loop_stop()
    return bench.messages / elapsed


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--ports", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--profile", action="store_true", help="py-spy the 10-port flood")
    args = parser.parse_args()
    if shutil.which("mosquitto_sub") is None:
        print("bench: mosquitto_sub not found (apt-get install mosquitto-clients)")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="facilities-bench-"))
    bench = Bench(workdir, args.messages)
    print(
        f"{args.messages} QoS 1 messages per run; broker on port {bench.broker.port}; "
        f"work dir {workdir}"
    )
    print(
        f"{'ports':>5} {'bytes':>6} {'case':>8} {'raw msg/s':>10} {'service':>10} "
        f"{'ratio':>6} {'svc RSS MB':>10}"
    )
    try:
        for ports in args.ports:
            size = len(payload(0, ports))
            raw = bench.raw_flood(ports)
            publish_rate = bench.last_publish_rate
            profile = (
                workdir / f"profile-{ports}.txt"
                if args.profile and ports == max(args.ports)
                else None
            )
            svc, rss = service_flood(bench, ports, profile=profile)
            print(
                f"{ports:>5} {size:>6} {'flood':>8} {raw:>10.0f} {svc:>10.0f} "
                f"{svc / raw:>6.0%} {rss:>10.0f}  (publisher alone: {publish_rate:.0f} msg/s)",
                flush=True,
            )
            raw = bench.raw_backlog(ports)
            ceiling = paho_backlog(bench, ports)
            svc, startup = service_backlog(bench, ports)
            print(
                f"{ports:>5} {size:>6} {'backlog':>8} {raw:>10.0f} {svc:>10.0f} "
                f"{svc / raw:>6.0%} {'':>10}  (paho alone: {ceiling:.0f} msg/s; "
                f"service start-up {startup:.1f} s, not counted)",
                flush=True,
            )
            if profile is not None:
                print("\nwhere the service's time goes (py-spy, flood, self time per frame):")
                for share, frame in summarize_profile(profile):
                    print(f"  {share:6.1%}  {frame}")
                print()
    finally:
        bench.broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
