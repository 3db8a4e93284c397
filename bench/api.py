"""API benchmark: requests/s and p50/p99 latency of GET /api/stations and
GET /api/stations/{id}, with all 20 stations live and ingest running at 200 msg/s, from a
separate load process on loopback; the same load against uvicorn serving a fixed body of
the same size is the baseline (the HTTP stack's ceiling here).

Run on demand: `.venv/bin/python bench/api.py [--seconds 10] [--connections 8] [--rate 200]`.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import ingested, start_broker, start_load, start_service  # noqa: E402
from facilities.mosquitto import free_port  # noqa: E402
from tests.support.poll import wait_until  # noqa: E402
from tests.support.processes import wait_http  # noqa: E402

SITE = ROOT / "site.example.toml"
STATIONS = tuple(f"cs-{n:02d}" for n in range(1, 21))


def _load(port: int, paths: list[str], seconds: float, connections: int) -> dict[str, float]:
    argv = [sys.executable, str(ROOT / "bench" / "http_load.py"), "--port", str(port)]
    for path in paths:
        argv += ["--path", path]
    argv += ["--seconds", str(seconds), "--connections", str(connections)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = json.loads(out)
    return result


def _row(name: str, r: dict[str, float], size: int) -> str:
    return (
        f"{name:<34} {r['rps']:>8.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}"
        f" {r['max_ms']:>8.1f} {size:>8}  {int(r['errors'])} errors"
    )


def _wait_all_online(port: int) -> None:
    """Every station live before measuring."""
    wait_until(
        lambda: all(s["online"] for s in httpx.get(f"http://127.0.0.1:{port}/api/stations").json()),
        timeout_s=20,
        what="every station online",
        interval_s=0.2,
    )


def _start_baseline(workdir: Path, port: int, body: bytes) -> subprocess.Popen[Any]:
    """uvicorn serving `body` as it is: the HTTP stack's ceiling."""
    (workdir / "body.json").write_bytes(body)
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "http_baseline.py"),
            "--port",
            str(port),
            "--body",
            str(workdir / "body.json"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _measure(
    args: argparse.Namespace, port: int, baseline_port: int, *, sizes: tuple[int, int]
) -> list[tuple[str, dict[str, float], int]]:
    """The baseline, then each API route, loaded in turn: (name, figures, body size);
    `sizes`: of the list's body and of one station's."""
    list_size, one_size = sizes
    one_each = [f"/api/stations/{s}" for s in STATIONS]
    return [
        (
            "baseline: uvicorn, fixed body",
            _load(baseline_port, ["/"], args.seconds, args.connections),
            list_size,
        ),
        (
            "GET /api/stations",
            _load(port, ["/api/stations"], args.seconds, args.connections),
            list_size,
        ),
        (
            "GET /api/stations/{id} (all 20)",
            _load(port, one_each, args.seconds, args.connections),
            one_size,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rate", type=float, default=200.0, help="ingest msg/s meanwhile")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="facilities-api-bench-"))
    broker = start_broker(workdir, SITE)
    baseline_port = free_port()
    processes: list[subprocess.Popen[Any]] = []
    try:
        service = start_service(workdir, SITE, broker)
        port = service.port
        processes.append(service.process)
        seconds = 3 * args.seconds + 20
        processes.append(start_load(broker, rate=args.rate, seconds=seconds, stations=STATIONS))
        _wait_all_online(port)
        stations_body = httpx.get(f"http://127.0.0.1:{port}/api/stations").content
        one_body = httpx.get(f"http://127.0.0.1:{port}/api/stations/cs-07").content
        processes.append(_start_baseline(workdir, baseline_port, stations_body))
        wait_http(baseline_port, "/")
        ingested_before, at_before = ingested(port), time.perf_counter()
        sizes = (len(stations_body), len(one_body))
        results = _measure(args, port, baseline_port, sizes=sizes)
        stored = (ingested(port) - ingested_before) / (time.perf_counter() - at_before)
        print(
            f"{args.connections} keep-alive connections from a separate process, "
            f"{args.seconds:.0f} s each; ingest meanwhile: {args.rate:.0f} msg/s asked, "
            f"{stored:.0f} msg/s stored"
        )
        print(f"{'':<34} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'bytes':>8}")
        for name, result, size in results:
            print(_row(name, result, size))
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                process.wait(10)
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
