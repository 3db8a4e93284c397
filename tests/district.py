"""A whole simulated district for end-to-end tests: `facilities run` and `facilities simulate`
(every device of the example site), shared by the modules that need it."""

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from facilities.mosquitto import PrivateBroker
from tests.conftest import EXAMPLE_SITE, ROOT
from tests.procs import ServiceProcess


def _credentials_file(broker: PrivateBroker, path: Path) -> Path:
    lines = [f'"{user}" = "{password}"' for user, password in broker.credentials.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


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
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stations = httpx.get(f"http://127.0.0.1:{service.port}/api/stations").json()
            garages = httpx.get(f"http://127.0.0.1:{service.port}/api/garages").json()
            text = httpx.get(f"http://127.0.0.1:{service.port}/metrics").text
            if (
                all(s["online"] for s in stations)
                and all(g["occupancy"] is not None for g in garages)
                # every port has reported its power (online can come before telemetry)
                and text.count("facilities_port_power_watts{") == 200
            ):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the simulated district did not come online")
        yield service
    finally:
        simulators.terminate()
        simulators.wait(10)
        service.terminate()
