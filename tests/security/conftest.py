"""`facilities run` as a real process, for attacks that only the real server shows."""

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from facilities.mosquitto import PrivateBroker
from facilities.site import Site
from tests.support.devices import clear_retained_status
from tests.support.processes import ServiceProcess

Run = Callable[..., ServiceProcess]


@pytest.fixture
def run_service(broker: PrivateBroker, site: Site, tmp_path: Path) -> Iterator[Run]:
    """Start `facilities run` with extra options; stopped at teardown."""
    started: list[ServiceProcess] = []
    clear_retained_status(broker, site)

    def run(*extra: str) -> ServiceProcess:
        name = f"sec-{uuid.uuid4().hex[:6]}"
        service = ServiceProcess(
            broker,
            tmp_path / f"{name}.db",
            client_id=name,
            log=tmp_path / f"{name}.log",
            extra=extra,
        )
        started.append(service.start())
        return service

    yield run
    for service in started:
        service.terminate()
