"""Soak: the district's devices at 50 times their rate against `facilities run`, with faults."""

# Run on demand (`make soak`, or `.venv/bin/python bench/soak.py --minutes 3`), never in
# `make test`. A private broker (shipped config) and `facilities run` in its own process
# (bench/rig.py); the site's devices simulated by simulators/ (physics in real time, telemetry
# `--factor` times more often than the site's interval); at set points of the run: a port
# overheating, a port overloading, a leaking and a smoking station, smoke in a garage, a
# station that never acks its commands, invalid messages, a SIGKILL of the service and a
# restart, and a broker restart. At the end it prints RSS over time, messages stored against
# sent, commands sent against acked and alerts raised against expected (bench/soak_report.py),
# and exits 1 if an expectation fails. What it holds: docs/reliability.md.

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import start_broker, start_service  # noqa: E402
from bench.soak_report import (  # noqa: E402
    Rig,
    RssSampler,
    check,
    print_figures,
    wait_stored,
)
from facilities.mqtt.session import BrokerUrl  # noqa: E402
from facilities.mqtt.topics import Topics  # noqa: E402
from facilities.rule_ids import RuleId  # noqa: E402
from facilities.site import Site, load_site  # noqa: E402
from simulators.client import DeviceClient  # noqa: E402
from simulators.devices import Behaviour  # noqa: E402
from simulators.fleet import Fleet  # noqa: E402
from tests.support.poll import wait_until  # noqa: E402

FACTOR = 50  # times the district's own rate: a day's wear in half an hour (docs/reliability.md)
SERVICE_DOWN_S = 3.0  # the service stays dead this long after its SIGKILL: a backlog builds
BROKER_DOWN_S = 2.0
GARAGE_SMOKE_S = 120.0  # seconds of smoke in the garage: the alert must hold, then clear
# After the load stops: the service drains what the broker queued, and commands still
# waiting for an ack run out their tries (3 x 5 s by default).
SETTLE_S = 20.0


def district_rate(site: Site) -> float:
    """Telemetry messages per second the site's devices send at their own cadence."""
    intervals = [s.thresholds.telemetry_interval_s for s in site.stations.values()]
    intervals += [g.thresholds.telemetry_interval_s for g in site.garages.values()]
    return sum(1.0 / interval for interval in intervals)


# --- faults ----------------------------------------------------------------------------------


def _station_fault(station: str, **attrs: object) -> Callable[[Rig], None]:
    def inject(rig: Rig) -> None:
        device = rig.fleet.stations[station]
        with device.lock:
            for name, value in attrs.items():
                setattr(device.model, name, value)

    return inject


def overheat(station: str, port: int) -> tuple[str, Callable[[Rig], None]]:
    def inject(rig: Rig) -> None:
        _station_fault(station, overheat_port=port)(rig)
        # 72 degrees at once: over the absolute limit and a rise of more than 10 in 60 s
        rig.expected.alert(RuleId.PORT_OVER_TEMPERATURE, f"{station}/{port}")
        rig.expected.alert(RuleId.TEMPERATURE_RISE, f"{station}/{port}")

    return f"over-temperature at {station}/{port}", inject


def overload(station: str, port: int, *, acks: bool = True) -> tuple[str, Callable[[Rig], None]]:
    def inject(rig: Rig) -> None:
        if not acks:
            rig.fleet.stations[station].behaviour = Behaviour.IGNORE
            rig.expected.silent.add(station)
            rig.expected.alert(RuleId.COMMAND_FAILED, f"{station}/{port}")
        _station_fault(station, overload_port=port)(rig)
        rig.expected.alert(RuleId.PORT_OVERLOAD, f"{station}/{port}")

    what = "overload" if acks else "overload at a station that never acks"
    return f"{what} at {station}/{port}", inject


def leakage(station: str) -> tuple[str, Callable[[Rig], None]]:
    def inject(rig: Rig) -> None:
        _station_fault(station, leaking=True)(rig)
        rig.expected.alert(RuleId.LEAKAGE, station)

    return f"leakage at {station}", inject


def smoke(station: str) -> tuple[str, Callable[[Rig], None]]:
    def inject(rig: Rig) -> None:
        _station_fault(station, smoking=True)(rig)
        rig.expected.alert(RuleId.SMOKE, station)

    return f"smoke at {station}", inject


def garage_smoke(garage: str) -> tuple[str, Callable[[Rig], None]]:
    def inject(rig: Rig) -> None:
        model = rig.fleet.world.garages[garage]
        model.smoke_left_s = GARAGE_SMOKE_S
        rig.expected.alert(RuleId.SMOKE, garage)
        # gates opened for the evacuation may stay open past the held-open limit
        rig.expected.allowed |= {(RuleId.GATE_HELD_OPEN, f"{garage}/{g}") for g in model.gates}

    return f"smoke in garage {garage} for {GARAGE_SMOKE_S:.0f} s", inject


def _bad_messages(batch: int, *, hostile: bool) -> list[tuple[str, bytes]]:
    """(topic, payload) of input a broken or hostile device sends, each to be quarantined;
    `batch` makes every payload unique (a copy would be a redelivery, stored once)."""
    good = {"seq": batch, "ts": time.time(), "ports": [{"port": 1, "state": "idle"}]}
    topics = Topics()
    cs = topics.station("cs-02", "telemetry")
    messages = [
        (cs, f"{{not json {batch}".encode()),
        (cs, json.dumps({**good, "temp_c": "hot"}).encode()),
        (cs, f'{{"seq": {batch}, "ts": 1.0, "temp_c": NaN}}'.encode()),
        (topics.station("cs-99", "telemetry"), json.dumps(good).encode()),
        (topics.station("cs-02", "whatever"), json.dumps(good).encode()),
        # over the protocol's 64 KiB cap
        (topics.garage("g-cq4", "telemetry"), b"x" * 70_000 + str(batch).encode()),
    ]
    if hostile:  # numbers the store cannot hold, a port the station does not have
        messages += [
            (cs, json.dumps({**good, "seq": 2**63 + batch}).encode()),
            (cs, json.dumps({**good, "ports": [{"port": 25_000 + batch}]}).encode()),
        ]
    return messages


def invalid(batch: int) -> tuple[str, Callable[[Rig], None]]:
    def inject(rig: Rig) -> None:
        for topic, payload in _bad_messages(batch, hostile=rig.hostile):
            rig.bad.publish_raw(topic, payload).wait_for_publish(10)
            rig.expected.quarantined += 1

    return f"invalid messages (batch {batch})", inject


def kill_service(rig: Rig) -> None:
    rig.service.send_signal(signal.SIGKILL)
    rig.service.wait(10)
    time.sleep(SERVICE_DOWN_S)
    restarted = start_service(rig.workdir, rig.site_path, rig.broker)
    rig.service, rig.http_port = restarted.process, restarted.port
    rig.rss.follow(rig.service.pid)


def restart_broker(rig: Rig) -> None:
    # Mosquitto publishes every connected device's Last Will as it shuts down: the service
    # hears each device go offline once, and back online when it reconnects
    for device in rig.fleet.clients:
        rig.expected.alert(RuleId.OFFLINE, device)
    rig.broker.stop()
    time.sleep(BROKER_DOWN_S)
    rig.broker.start()
    reconnected(rig.fleet)


def reconnected(fleet: Fleet, timeout_s: float = 60.0) -> None:
    """Wait for every simulated device to be back (each subscribes again on its own)."""
    wait_until(
        lambda: all(client.connected() for client in fleet.clients.values()),
        timeout_s=timeout_s,
        what="every simulated device to reconnect to the broker",
        interval_s=0.1,
    )


def schedule() -> list[tuple[float, str, Callable[[Rig], None]]]:
    """(share of the run, what, inject): faults spread over the first 60 % of the run, the rest
    steady, so that RSS is read on a service that has seen everything."""
    points: list[tuple[float, tuple[str, Callable[[Rig], None]]]] = [
        (0.08, invalid(1)),
        (0.10, overheat("cs-06", 2)),
        (0.15, overload("cs-09", 4)),
        (0.20, leakage("cs-11")),
        (0.25, ("SIGKILL of the service, restarted", kill_service)),
        (0.30, smoke("cs-12")),
        (0.35, garage_smoke("g-hc4")),
        (0.40, overload("cs-14", 5, acks=False)),
        (0.45, invalid(2)),
        (0.50, ("broker restart", restart_broker)),
        (0.55, overheat("cs-16", 1)),
        (0.60, invalid(3)),
    ]
    return [(share, what, inject) for share, (what, inject) in points]


class FleetThread:
    """simulators.fleet.Fleet publishing on its own event loop, in a thread."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[None] | None = None
        self.thread = threading.Thread(target=self._run, name="fleet", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.task = self.loop.create_task(self.fleet.run())
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self.task)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)


def run(args: argparse.Namespace) -> int:
    site_path = Path(args.site).resolve()
    site = load_site(site_path)
    base = district_rate(site)
    rate = base * args.factor
    print(
        f"district: {len(site.stations)} stations ({sum(s.ports for s in site.stations.values())}"
        f" ports) and {len(site.garages)} garages = {base:.2f} msg/s of telemetry (plus events);"
        f" x{args.factor:g} = {rate:.0f} msg/s for {args.minutes:g} min",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="facilities-soak-"))
    print(f"workdir: {workdir}", flush=True)
    broker = start_broker(workdir, site_path)
    started_service = start_service(workdir, site_path, broker)
    service, http_port = started_service.process, started_service.port
    rss = RssSampler(service.pid, every_s=args.sample_s)
    fleet = Fleet(
        site,
        BrokerUrl.parse(broker.url()),
        credentials=broker.credentials,
        seed=args.seed,
    )
    # real-time physics (speed 1: no false temperature rise from squeezed time), telemetry
    # `factor` times as often as the site's devices send it
    fleet.interval_s = 1.0 / rate * (len(site.stations) + len(site.garages))
    fleet.connect()
    bad_user = broker.new_user_like("bench")
    bad = DeviceClient(BrokerUrl.parse(broker.url(bad_user)), client_id=bad_user).connect()
    rig = Rig(workdir, site_path, broker, fleet, service, http_port, bad, rss, hostile=args.hostile)
    publishing = FleetThread(fleet)
    seconds = args.minutes * 60.0
    started = time.monotonic()
    rig.note(f"load started: every device every {fleet.interval_s * 1000:.0f} ms")
    pending = schedule()
    rss.quiet_from = pending[-1][0] * seconds
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            if not publishing.alive():
                raise SystemExit("the simulated devices stopped publishing (see above)")
            if (code := rig.service.poll()) is not None:
                rig.note(f"t={elapsed:6.0f} s  the service exited with code {code}: run stopped")
                break
            rss.sample(elapsed)
            while pending and pending[0][0] * seconds <= elapsed:
                _, what, inject = pending.pop(0)
                rig.note(f"t={elapsed:6.0f} s  {what}")
                inject(rig)
            time.sleep(0.2)
        publishing.stop()
        load_s = time.monotonic() - started
        rig.note(f"load stopped after {load_s:.0f} s; settling {SETTLE_S:.0f} s")
        time.sleep(SETTLE_S)
        rss.sample(time.monotonic() - started, force=True)
        stored = wait_stored(workdir / "f.db", fleet, expected=rig.expected)
        failures = check(rig, stored, load_s=load_s)
        print_figures(rig, stored, load_s=load_s, rate=rate, failures=failures)
        return 1 if failures else 0
    finally:
        publishing.stop()
        fleet.close()
        bad.close()
        rig.service.terminate()
        try:
            rig.service.wait(10)
        except subprocess.TimeoutExpired:
            rig.service.kill()
        broker.stop()
        print(f"service log: {workdir / 'service.log'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--factor", type=float, default=FACTOR, help="times the site's rate")
    parser.add_argument("--sample-s", type=float, default=10.0, help="RSS sampling interval")
    parser.add_argument("--site", default=str(ROOT / "site.example.toml"))
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument(
        "--hostile",
        action="store_true",
        help="also send numbers the store cannot hold and ports a station does not have",
    )
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
