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

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facilities.mosquitto import PrivateBroker, free_port  # noqa: E402
from facilities.site import load_site  # noqa: E402

SITE = ROOT / "site.example.toml"
STATIONS = tuple(f"cs-{n:02d}" for n in range(1, 21))


def _wait_http(port: int, path: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"nothing answered on port {port}{path}")


def _load(port: int, paths: list[str], seconds: float, connections: int) -> dict[str, float]:
    argv = [sys.executable, str(ROOT / "bench" / "http_load.py"), "--port", str(port)]
    for path in paths:
        argv += ["--path", path]
    argv += ["--seconds", str(seconds), "--connections", str(connections)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = json.loads(out)
    return result


def _ingested(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("facilities_messages_ingested_total{")
    )


def _row(name: str, r: dict[str, float], size: int) -> str:
    return (
        f"{name:<34} {r['rps']:>8.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}"
        f" {r['max_ms']:>8.1f} {size:>8}  {int(r['errors'])} errors"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rate", type=float, default=200.0, help="ingest msg/s meanwhile")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="facilities-api-bench-"))
    broker = PrivateBroker(
        workdir / "broker",
        load_site(SITE),
        extra_users={"bench": ("topic readwrite facilities/#",)},
    ).start()
    port, baseline_port = free_port(), free_port()
    log = (workdir / "service.log").open("ab")
    processes: list[subprocess.Popen[str]] = []
    try:
        service = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "facilities"),
                "--log-level",
                "ERROR",
                "run",
                "--site",
                str(SITE),
                "--broker",
                broker.url(),
                "--db",
                str(workdir / "f.db"),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=log,
            text=True,
        )
        processes.append(service)
        _wait_http(port, "/healthz")
        seconds = 3 * args.seconds + 20
        load = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "load.py"),
                "--port",
                str(broker.port),
                "--user",
                "bench",
                "--password",
                broker.credentials["bench"],
                "--rate",
                str(args.rate),
                "--seconds",
                str(seconds),
                "--stations",
                *STATIONS,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(load)
        # every station live before measuring
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            live = httpx.get(f"http://127.0.0.1:{port}/api/stations").json()
            if all(s["online"] for s in live):
                break
            time.sleep(0.2)
        else:
            raise SystemExit("not every station came online")
        stations_body = httpx.get(f"http://127.0.0.1:{port}/api/stations").content
        one_body = httpx.get(f"http://127.0.0.1:{port}/api/stations/cs-07").content
        (workdir / "body.json").write_bytes(stations_body)
        baseline = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "http_baseline.py"),
                "--port",
                str(baseline_port),
                "--body",
                str(workdir / "body.json"),
            ],
            stdout=log,
            stderr=log,
            text=True,
        )
        processes.append(baseline)
        _wait_http(baseline_port, "/")

        ingested_before, at_before = _ingested(port), time.perf_counter()
        results = [
            (
                "baseline: uvicorn, fixed body",
                _load(baseline_port, ["/"], args.seconds, args.connections),
                len(stations_body),
            ),
            (
                "GET /api/stations",
                _load(port, ["/api/stations"], args.seconds, args.connections),
                len(stations_body),
            ),
            (
                "GET /api/stations/{id} (all 20)",
                _load(
                    port, [f"/api/stations/{s}" for s in STATIONS], args.seconds, args.connections
                ),
                len(one_body),
            ),
        ]
        stored = (_ingested(port) - ingested_before) / (time.perf_counter() - at_before)
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
