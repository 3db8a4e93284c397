"""A whole simulated district for end-to-end tests: `facilities run` and `facilities simulate`
(every device of the example site), shared by the modules that need it."""

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from facilities.mosquitto import PrivateBroker
from tests.support.paths import EXAMPLE_SITE, ROOT
from tests.support.poll import wait_until
from tests.support.processes import ServiceProcess


def _credentials_file(broker: PrivateBroker, path: Path) -> Path:
    lines = [f'"{user}" = "{password}"' for user, password in broker.credentials.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _online(port: int) -> bool:
    """Every station online, every garage's occupancy known, every port's power reported
    (online can come before telemetry)."""
    stations = httpx.get(f"http://127.0.0.1:{port}/api/stations").json()
    garages = httpx.get(f"http://127.0.0.1:{port}/api/garages").json()
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return (
        all(s["online"] for s in stations)
        and all(g["occupancy"] is not None for g in garages)
        and text.count("facilities_port_power_watts{") == 200
    )


@pytest.fixture(scope="module")
def district(
    broker: PrivateBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """`facilities run` and `facilities simulate` (every device of the example site, time x10)."""
    workdir = tmp_path_factory.mktemp("district")
    service = ServiceProcess(
        broker,
        workdir / "facilities.db",
        client_id=f"district-{uuid.uuid4().hex[:6]}",
        log=workdir / "service.log",
    ).start()
    simulators = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "facilities"),
            "simulate",
            "--site",
            str(EXAMPLE_SITE),
            "--broker",
            f"mqtt://127.0.0.1:{broker.port}",
            "--credentials",
            str(_credentials_file(broker, workdir / "credentials.toml")),
            "--speed",
            "10",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "simulate.log").open("wb"),
    )
    try:
        wait_until(
            lambda: _online(service.port),
            timeout_s=30,
            what="the simulated district to come online",
            interval_s=0.2,
        )
        yield service
    finally:
        simulators.terminate()
        simulators.wait(10)
        service.terminate()
