"""Memory with many stations live: `facilities run` with N simulated stations publishing, its
peak resident set (VmHWM) after a while, beside the example district's 20 in the same run.

Run on demand: `.venv/bin/python bench/live_memory.py [--stations 200] [--seconds 120]`.
Stations publish as `facilities simulate` makes them (10 ports, telemetry every 10 s of
simulated time), sped up by `--speed` so that a short run holds as many messages, sessions and
alerts' worth of state as a longer one would.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import ingested, start_broker, start_service  # noqa: E402
from facilities.broker_config import CREDENTIALS_FILE  # noqa: E402

COMMUNITY = 'id = "cq4"\nname = "长桥四村"\nname_en = "Changqiao No.4 Village"\n'


def site_of(stations: int) -> str:
    """A site of `stations` ten-port stations in one community, no garages."""
    parts = ["[[community]]\n" + COMMUNITY]
    for n in range(1, stations + 1):
        parts.append(
            "[[station]]\n"
            f'id = "st-{n:04d}"\ncommunity = "cq4"\n'
            f'name = "充电站 {n}"\nname_en = "Station {n}"\n'
            "ports = 10\nport_max_w = 1000\nstation_max_w = 7000\n"
        )
    return "\n".join(parts)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def measure(workdir: Path, stations: int, seconds: float, speed: float) -> None:
    site = workdir / "site.toml"
    site.write_text(site_of(stations), encoding="utf-8")
    broker = start_broker(workdir, site)
    service = start_service(workdir, site, broker)
    assert service.process is not None
    started_mb = peak_rss_mb(service.process.pid)
    fleet = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "facilities",
            "--log-level",
            "WARNING",
            "simulate",
            "--site",
            str(site),
            "--broker",
            f"mqtt://127.0.0.1:{broker.port}",
            "--credentials",
            str(broker.workdir / CREDENTIALS_FILE),
            "--speed",
            f"{speed:g}",
            "--run-for",
            f"{seconds:g}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / f"fleet-{stations}.log").open("wb"),
    )
    try:
        fleet.wait(seconds + 60)
        stored = ingested(service.port)
        peak = peak_rss_mb(service.process.pid)
    finally:
        fleet.kill()
        service.terminate()
        broker.stop()
    print(
        f"{stations:>8} {seconds:>6.0f} {speed:>5g} {stored:>9.0f} {started_mb:>12.1f}"
        f" {peak:>12.1f}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--speed", type=float, default=10.0, help="simulated time per real s")
    args = parser.parse_args()
    print("stations seconds speed  messages  RSS at start MB  peak RSS MB")
    for stations in args.stations:
        with tempfile.TemporaryDirectory(prefix="facilities-memory-") as tmp:
            started = time.monotonic()
            measure(Path(tmp), stations, args.seconds, args.speed)
            print(f"         ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
