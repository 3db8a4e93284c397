"""What the end-to-end benchmarks share: a private broker with a `bench` user, `facilities
run` in its own process, steady background telemetry, and the service's own counters."""

import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facilities.mosquitto import PrivateBroker, free_port  # noqa: E402
from facilities.mqtt.topics import Topics  # noqa: E402
from facilities.site import load_site  # noqa: E402


def start_broker(workdir: Path, site: Path) -> PrivateBroker:
    """The shipped broker config on a free port, with a `bench` user that may write anything."""
    return PrivateBroker(
        workdir / "broker",
        load_site(site),
        extra_users={"bench": (f"topic readwrite {Topics().everything()}",)},
    ).start()


def wait_http(port: int, path: str = "/healthz", timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"nothing answered on 127.0.0.1:{port}{path} within {timeout_s:.0f} s")


def start_service(
    workdir: Path, site: Path, broker: PrivateBroker
) -> tuple[subprocess.Popen[bytes], int]:
    """`facilities run` against `broker`, healthy; (process, HTTP port). Logs in workdir."""
    port = free_port()
    log = (workdir / "service.log").open("ab")
    process = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "facilities"),
            "--log-level",
            "ERROR",
            "run",
            "--site",
            str(site),
            "--broker",
            broker.url(),
            "--db",
            str(workdir / "f.db"),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    wait_http(port)
    return process, port


def start_load(
    broker: PrivateBroker, *, rate: float, seconds: float, stations: tuple[str, ...]
) -> subprocess.Popen[str]:
    """bench/load.py: `rate` msg/s of normal 10-port telemetry from `stations`; prints
    {"sent", "seconds"} as JSON when done. Each load has a user of its own (`bench-…`): the
    broker takes a client's id from its user name, so two loads of one user would take turns."""
    user = broker.new_user_like("bench")
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "load.py"),
            "--port",
            str(broker.port),
            "--user",
            user,
            "--password",
            broker.credentials[user],
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--stations",
            *stations,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def ingested(http_port: int) -> float:
    """Messages the service has stored so far, from its own /metrics."""
    text = httpx.get(f"http://127.0.0.1:{http_port}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("facilities_messages_ingested_total{")
    )
