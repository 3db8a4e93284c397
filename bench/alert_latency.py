"""Alert latency: from a device publishing an overheated port to the power_off command
arriving back at that device, while 2,000 msg/s of normal telemetry load the service.

Run on demand: `.venv/bin/python bench/alert_latency.py [--injections 200] [--rate 2000]`.
Starts a private broker (shipped config) and `facilities run` with a site file whose two
injection stations clear alerts at once (`clear_after_s = 0`), so each port can trip again.
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

from bench.rig import ingested, start_broker, start_load, start_service  # noqa: E402
from facilities.mosquitto import PrivateBroker  # noqa: E402
from facilities.mqtt.broker_url import BrokerUrl  # noqa: E402
from facilities.mqtt.topics import Topics  # noqa: E402
from facilities.site import load_site  # noqa: E402
from simulators.client import DeviceClient  # noqa: E402

INJECT = ("cs-19", "cs-20")
LOAD = tuple(f"cs-{n:02d}" for n in range(1, 19))
TOPICS = Topics()


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

    def __init__(self, broker: PrivateBroker, station: str) -> None:
        self.station = station
        self.client = DeviceClient(BrokerUrl.parse(broker.url(station)), client_id=station)
        self.client.connect()
        self.arrived: dict[int, float] = {}
        self.event = threading.Event()
        self.seq = 0
        self.client.subscribe(TOPICS.station(station, "command"), self._on_command)

    def _on_command(self, _topic: str, payload: bytes) -> None:
        arrived = time.perf_counter()
        command = json.loads(payload)
        if command.get("action") == "power_off" and command.get("port"):
            self.arrived[int(command["port"])] = arrived
            self.event.set()
        ack = json.dumps({"id": command["id"], "ok": True})
        self.client.publish_raw(TOPICS.station(self.station, "command/ack"), ack)

    def _send(self, port: int, temp_c: float) -> float:
        self.seq += 1
        body = {
            "seq": self.seq,
            "ts": time.time(),
            "ports": [{"port": port, "state": "charging", "power_w": 300.0, "temp_c": temp_c}],
        }
        started = time.perf_counter()
        self.client.publish_raw(TOPICS.station(self.station, "telemetry"), json.dumps(body))
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


def _report(
    args: argparse.Namespace, sent: dict[str, float], stored: float, latencies: list[float]
) -> list[str]:
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return [
        f"background load: {args.rate:.0f} msg/s asked, {sent['sent'] / sent['seconds']:.0f}"
        f" msg/s published (10 ports per message, {len(LOAD)} stations); the service"
        f" stored {stored:.0f} msg/s while the injections ran",
        f"publish -> power_off at the station: p50 {statistics.median(ms):.1f} ms, "
        f"p99 {p99:.1f} ms, max {ms[-1]:.1f} ms, min {ms[0]:.1f} ms",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--injections", type=int, default=200)
    parser.add_argument("--rate", type=float, default=2000.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="facilities-latency-"))
    site = bench_site(workdir)
    broker = start_broker(workdir, site)
    service = start_service(workdir, site, broker)
    port = service.port
    load = None
    try:
        injectors = [Injector(broker, s) for s in INJECT]
        # injections take ~1.3 s each (mostly waiting for the alert to clear), in 2 threads
        seconds = args.injections * 1.4 / len(injectors) + 10
        load = start_load(broker, rate=args.rate, seconds=seconds, stations=LOAD)
        time.sleep(3)  # let the load settle
        ingested_start, at_start = ingested(port), time.perf_counter()
        latencies, missed = _inject(injectors, args.injections)
        ingested_end, at_end = ingested(port), time.perf_counter()
        out, _ = load.communicate(timeout=seconds + 30)
        stored = (ingested_end - ingested_start) / (at_end - at_start)
        load_line, latency_line = _report(args, json.loads(out), stored, latencies)
        print(load_line)
        print(f"injections: {len(latencies)} measured, {missed} without a power_off within 5 s")
        print(latency_line)
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        service.terminate()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
