"""Soak: the district's devices at 50 times their rate against `facilities run`, with faults."""

# Run on demand (`make soak`, or `.venv/bin/python bench/soak.py --minutes 3`), never in
# `make test`. A private broker (shipped config) and `facilities run` in its own process
# (bench/rig.py); the site's devices simulated by simulators/ (physics in real time, telemetry
# `--factor` times more often than the site's interval); at set points of the run: a port
# overheating, a port overloading, a leaking and a smoking station, smoke in a garage, a
# station that never acks its commands, invalid messages, a SIGKILL of the service and a
# restart, and a broker restart. At the end it prints RSS over time, messages stored against
# sent, commands sent against acked and alerts raised against expected (bench/soak_report.py),
# and exits 1 if an expectation fails. The faults: bench/soak_faults.py. What it holds:
# docs/reliability.md.

import argparse
import asyncio
import contextlib
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
from bench.soak_faults import schedule  # noqa: E402
from bench.soak_report import (  # noqa: E402
    Rig,
    RssSampler,
    check,
    print_figures,
)
from bench.soak_store import wait_stored  # noqa: E402
from facilities.mqtt.broker_url import BrokerUrl  # noqa: E402
from facilities.site import Site, load_site  # noqa: E402
from simulators.client import DeviceClient  # noqa: E402
from simulators.fleet import Fleet  # noqa: E402

FACTOR = 50  # times the district's own rate: a day's wear in half an hour (docs/reliability.md)
# After the load stops: the service drains what the broker queued, and commands still
# waiting for an ack run out their tries (3 x 5 s by default).
SETTLE_S = 20.0


def district_rate(site: Site) -> float:
    """Telemetry messages per second the site's devices send at their own cadence."""
    intervals = [s.thresholds.telemetry_interval_s for s in site.stations.values()]
    intervals += [g.thresholds.telemetry_interval_s for g in site.garages.values()]
    return sum(1.0 / interval for interval in intervals)


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
    rig = _rig(args, workdir, site_path, site, rate=rate)
    publishing = FleetThread(rig.fleet)
    seconds = args.minutes * 60.0
    started = time.monotonic()
    rig.note(f"load started: every device every {rig.fleet.interval_s * 1000:.0f} ms")
    pending = schedule()
    rig.rss.quiet_from = pending[-1][0] * seconds
    try:
        _drive(rig, publishing, pending, seconds=seconds, started=started)
        publishing.stop()
        load_s = time.monotonic() - started
        rig.note(f"load stopped after {load_s:.0f} s; settling {SETTLE_S:.0f} s")
        time.sleep(SETTLE_S)
        rig.rss.sample(time.monotonic() - started, force=True)
        stored = wait_stored(workdir / "f.db", rig.fleet, expected=rig.expected)
        failures = check(rig, stored, load_s=load_s)
        print_figures(rig, stored, load_s=load_s, rate=rate, failures=failures)
        return 1 if failures else 0
    finally:
        publishing.stop()
        _stop(rig)
        print(f"service log: {workdir / 'service.log'}")


def _rig(
    args: argparse.Namespace, workdir: Path, site_path: Path, site: Site, *, rate: float
) -> Rig:
    """The broker, the service, the simulated fleet (connected) and the bad client."""
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
    return Rig(
        workdir, site_path, broker, fleet, service, http_port, bad, rss, hostile=args.hostile
    )


def _drive(
    rig: Rig,
    publishing: FleetThread,
    pending: list[tuple[float, str, Callable[[Rig], None]]],
    *,
    seconds: float,
    started: float,
) -> None:
    """The load for `seconds`, each fault of `pending` injected when due; stops early if the
    service exits."""
    while (elapsed := time.monotonic() - started) < seconds:
        if not publishing.alive():
            raise SystemExit("the simulated devices stopped publishing (see above)")
        if (code := rig.service.poll()) is not None:
            rig.note(f"t={elapsed:6.0f} s  the service exited with code {code}: run stopped")
            return
        rig.rss.sample(elapsed)
        while pending and pending[0][0] * seconds <= elapsed:
            _, what, inject = pending.pop(0)
            rig.note(f"t={elapsed:6.0f} s  {what}")
            inject(rig)
        time.sleep(0.2)


def _stop(rig: Rig) -> None:
    rig.fleet.close()
    rig.bad.close()
    rig.service.terminate()
    try:
        rig.service.wait(10)
    except subprocess.TimeoutExpired:
        rig.service.kill()
    rig.broker.stop()


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
