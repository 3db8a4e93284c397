"""Alert latency: from a device publishing an overheated port to the power_off command
arriving back at that device, while 2,000 msg/s of normal telemetry load the service.

Run on demand: `.venv/bin/python bench/alert_latency.py [--injections 200] [--rate 2000 ...]`
(several rates: each measured in turn, and the rate at which p99 passes 100 ms is printed).
Starts a private broker (shipped config) and `facilities run` with a site file whose two
injection stations clear alerts at once (`clear_after_s = 0`), so each port can trip again.

`--processes 2`: two `facilities run` processes on one database, each `--partition K/2` of
the stations (`--split prefix`: the earlier prototype, half of the stations under each of two
topic prefixes, one injection station each); the background is published by two loads.

`--store postgresql`: the service (or both) on a fresh database of a private PostgreSQL
(bench/stores.py) instead of a SQLite file.
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import PREFIXES, ingested, start_broker, start_load, start_service  # noqa: E402
from bench.stores import STORES, PostgresStore  # noqa: E402
from facilities.mosquitto import PrivateBroker  # noqa: E402
from facilities.mqtt.broker_url import BrokerUrl  # noqa: E402
from facilities.mqtt.topics import DEFAULT_PREFIX, Topics  # noqa: E402
from facilities.site import load_site  # noqa: E402
from simulators.client import DeviceClient  # noqa: E402

INJECT = ("cs-19", "cs-20")
LOAD = tuple(f"cs-{n:02d}" for n in range(1, 19))


def bench_site(workdir: Path) -> Path:
    """The example site, with the injection stations clearing alerts at once."""
    text = (ROOT / "site.example.toml").read_text(encoding="utf-8")
    lines, out, current = text.splitlines(), [], None
    for line in lines:
        out.append(line)
        if line.startswith("id = "):
            current = line.split('"')[1]
        if line.startswith("station_max_w") and current in INJECT:
            out += ["", "[station.rules]", "clear_after_s = 0"]
    site = workdir / "site.toml"
    # cs-20 already has a [station.rules] table in the example: merge by dropping duplicates
    site.write_text(
        "\n".join(out).replace(
            "[station.rules]\nclear_after_s = 0\n\n[station.rules]",
            "[station.rules]\nclear_after_s = 0",
        )
        + "\n",
        encoding="utf-8",
    )
    load_site(site)  # refuse to run on a site the service would refuse
    return site


class Injector:
    """A station that overheats one port at a time and times the power_off it gets back."""

    def __init__(self, broker: PrivateBroker, station: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.station = station
        self.topics = Topics(prefix)
        # under another prefix the station's own user may not publish: a user of its own
        user = station if prefix == DEFAULT_PREFIX else broker.new_user_like("bench-any")
        self.client = DeviceClient(BrokerUrl.parse(broker.url(user)), client_id=user)
        self.client.connect()
        self.arrived: dict[int, float] = {}
        self.event = threading.Event()
        self.seq = 0
        self.client.subscribe(self.topics.station(station, "command"), self._on_command)

    def _on_command(self, _topic: str, payload: bytes) -> None:
        arrived = time.perf_counter()
        command = json.loads(payload)
        if command.get("action") == "power_off" and command.get("port"):
            self.arrived[int(command["port"])] = arrived
            self.event.set()
        ack = json.dumps({"id": command["id"], "ok": True})
        self.client.publish_raw(self.topics.station(self.station, "command/ack"), ack)

    def _send(self, port: int, temp_c: float) -> float:
        self.seq += 1
        body = {
            "seq": self.seq,
            "ts": time.time(),
            "ports": [{"port": port, "state": "charging", "power_w": 300.0, "temp_c": temp_c}],
        }
        started = time.perf_counter()
        self.client.publish_raw(self.topics.station(self.station, "telemetry"), json.dumps(body))
        return started

    def trip(self, port: int, timeout_s: float = 5.0) -> float | None:
        """Overheat `port`; return seconds until its power_off arrived (None: it did not)."""
        self.arrived.pop(port, None)
        self.event.clear()
        started = self._send(port, 65.0)
        deadline = time.perf_counter() + timeout_s
        while port not in self.arrived and time.perf_counter() < deadline:
            self.event.wait(0.05)
            self.event.clear()
        latency = self.arrived[port] - started if port in self.arrived else None
        self._send(port, 25.0)  # cool down: the alert clears (clear_after_s = 0) ...
        time.sleep(1.2)  # ... at the next evaluation (the tick, every second)
        return latency


def _inject(injectors: list[Injector], count: int) -> tuple[list[float], int]:
    """`count` injections shared by the injectors, each in its thread: the latencies of
    those that got their power_off, and how many did not."""
    latencies: list[float] = []
    missed = 0
    lock = threading.Lock()

    def run(injector: Injector, count: int) -> None:
        nonlocal missed
        for i in range(count):
            latency = injector.trip(1 + i % 10)
            with lock:
                if latency is None:
                    missed += 1
                else:
                    latencies.append(latency)

    threads = [
        threading.Thread(target=run, args=(inj, count // len(injectors))) for inj in injectors
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, missed


def _percentiles(latencies: list[float]) -> tuple[float, float, float, float]:
    """p50, p99, max and min in milliseconds."""
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return statistics.median(ms), p99, ms[-1], ms[0]


def _measure(
    broker: PrivateBroker,
    ports: list[int],
    injectors: list[Injector],
    *,
    rate: float,
    injections: int,
    split: str,
) -> float | None:
    """One background rate: print what was sent, stored and measured; return the p99 in ms
    (None when no injection got its power_off). The background is shared by the services
    (`ports`: their HTTP ports), each its share of the stations under its prefix."""
    # injections take ~1.3 s each (mostly waiting for the alert to clear), in 2 threads
    seconds = injections * 1.4 / len(injectors) + 10
    count = len(ports)
    loads = [
        start_load(
            broker,
            rate=rate / count,
            seconds=seconds,
            stations=LOAD[k::count],
            prefix=PREFIXES[k] if split == "prefix" else PREFIXES[0],
        )
        for k in range(count)
    ]
    try:
        time.sleep(3)  # let the load settle
        ingested_start, at_start = sum(map(ingested, ports)), time.perf_counter()
        latencies, missed = _inject(injectors, injections)
        ingested_end, at_end = sum(map(ingested, ports)), time.perf_counter()
        outs = [load.communicate(timeout=seconds + 30)[0] for load in loads]
    finally:
        for load in loads:
            if load.poll() is None:
                load.kill()
    sent = [json.loads(out) for out in outs]
    published = sum(s["sent"] / s["seconds"] for s in sent)
    stored = (ingested_end - ingested_start) / (at_end - at_start)
    print(
        f"background load: {rate:.0f} msg/s asked, {published:.0f} msg/s published (10 ports"
        f" per message, {len(LOAD)} stations); {count} service process(es) stored {stored:.0f}"
        " msg/s while the injections ran"
    )
    print(f"injections: {len(latencies)} measured, {missed} without a power_off within 5 s")
    if not latencies:
        return None
    p50, p99, top, low = _percentiles(latencies)
    print(
        f"publish -> power_off at the station: p50 {p50:.1f} ms, p99 {p99:.1f} ms,"
        f" max {top:.1f} ms, min {low:.1f} ms",
        flush=True,
    )
    return p99 if not missed else float("inf")  # a missed cut-off fails whatever the p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--injections", type=int, default=200)
    parser.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=[2000.0],
        help="background rates (msg/s), measured in turn against one service; with several,"
        " also says where p99 passes 100 ms",
    )
    parser.add_argument(
        "--processes",
        type=int,
        choices=(1, 2),
        default=1,
        help="service processes on one database, the stations split between them",
    )
    parser.add_argument("--store", choices=STORES, default="sqlite", help="the database")
    parser.add_argument(
        "--split",
        choices=("partition", "prefix"),
        default="partition",
        help="how two processes share the stations (see above)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="facilities-latency-"))
    site = bench_site(workdir)
    postgres = PostgresStore() if args.store == "postgresql" else None
    db = postgres.new_database("latency") if postgres is not None else None
    broker = start_broker(workdir, site)
    p99s: dict[float, float | None] = {}
    services = []
    try:
        partitioned = args.split == "partition" and args.processes > 1
        for k in range(args.processes):
            partition = f"{k}/{args.processes}" if partitioned else ""
            services.append(
                start_service(workdir, site, broker, instance=k, db=db, partition=partition)
            )
        ports = [service.port for service in services]
        injectors = [
            Injector(broker, station, PREFIXES[0 if partitioned else k % args.processes])
            for k, station in enumerate(INJECT)
        ]
        for rate in args.rate:
            p99s[rate] = _measure(
                broker, ports, injectors, rate=rate, injections=args.injections, split=args.split
            )
    finally:
        for service in services:
            if service.process is not None:
                service.process.terminate()
                service.process.wait(10)
        broker.stop()
        if postgres is not None:
            postgres.stop()
    if len(p99s) > 1:
        print(_where_it_breaks(p99s))
    return 0


def _where_it_breaks(p99s: dict[float, float | None]) -> str:
    """The background rate at which p99 passes 100 ms, as the rates measured bracket it."""
    failing = [rate for rate, p99 in p99s.items() if p99 is None or p99 >= 100]
    if not failing:
        return f"p99 < 100 ms at every rate measured (up to {max(p99s):.0f} msg/s)"
    below = [rate for rate in p99s if rate < min(failing)]
    if not below:
        return f"p99 >= 100 ms from the lowest rate measured ({min(p99s):.0f} msg/s)"
    return (
        f"p99 passes 100 ms between {max(below):.0f} and {min(failing):.0f} msg/s of"
        " background telemetry"
    )


if __name__ == "__main__":
    sys.exit(main())
