"""What the end-to-end benchmarks share: a private broker with a `bench` user, `facilities
run` in its own process (both started as the tests start them, tests/support/processes.py),
steady background telemetry, and the service's own counters."""

import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facilities.broker_config import SERVICE_USER  # noqa: E402
from facilities.mosquitto import PrivateBroker  # noqa: E402
from facilities.mqtt.topics import DEFAULT_PREFIX, Topics  # noqa: E402
from facilities.settings import DEFAULT_CONNECT_TIMEOUT_S  # noqa: E402
from facilities.site import load_site  # noqa: E402
from tests.support import processes  # noqa: E402
from tests.support.processes import ServiceProcess  # noqa: E402

# A service is given this long to answer /healthz (it replays its state first).
START_TIMEOUT_S = 30.0


def start_broker(workdir: Path, site: Path) -> PrivateBroker:
    """The shipped broker config on a free port, with a `bench` user that may write anything."""
    bench_users = {
        "bench": (f"topic readwrite {Topics().everything()}",),
        # a device or load under another topic prefix (a second instance's devices)
        "bench-any": ("topic readwrite #",),
    }
    return processes.start_broker(workdir / "broker", load_site(site), extra_users=bench_users)


# Topic prefixes of the instances of a two-process benchmark (bench/partitions.py): each
# instance hears only its own devices, which publish under its prefix.
PREFIXES = (DEFAULT_PREFIX, "facilities-b")


def start_service(
    workdir: Path,
    site: Path,
    broker: PrivateBroker,
    *,
    instance: int = 0,
    db: str | None = None,
    partition: str = "",
) -> ServiceProcess:
    """`facilities run` against `broker`, healthy, logs in workdir: the service user, or for
    `instance` 1 a user of its own, on the same database (`db`: a PostgreSQL URL, else the
    SQLite file f.db in workdir). With `partition` (`1/2`) it is `--partition` that one, under
    the one prefix; without, instance 1 has the second prefix (the earlier prototype)."""
    user = SERVICE_USER if instance == 0 else f"{SERVICE_USER}-{instance}"
    prefix = PREFIXES[0] if partition else PREFIXES[instance]
    broker.service_url(user, Topics(prefix))
    if partition:
        extra: tuple[str, ...] = ("--partition", partition)
    else:
        extra = () if instance == 0 else ("--topic-prefix", prefix)
    return ServiceProcess(
        broker,
        db or workdir / "f.db",
        client_id=user,
        log=workdir / ("service.log" if instance == 0 else f"service-{instance}.log"),
        site=site,
        log_level="ERROR",
        connect_timeout_s=DEFAULT_CONNECT_TIMEOUT_S,
        extra=extra,
    ).start(timeout_s=START_TIMEOUT_S)


def start_load(
    broker: PrivateBroker,
    *,
    rate: float,
    seconds: float,
    stations: tuple[str, ...],
    prefix: str = DEFAULT_PREFIX,
) -> subprocess.Popen[str]:
    """bench/load.py: `rate` msg/s of normal 10-port telemetry from `stations`; prints
    {"sent", "seconds"} as JSON when done. Each load has a user of its own (`bench-…`): the
    broker takes a client's id from its user name, so two loads of one user would take turns."""
    user = broker.new_user_like("bench" if prefix == DEFAULT_PREFIX else "bench-any")
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
            "--prefix",
            prefix,
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
