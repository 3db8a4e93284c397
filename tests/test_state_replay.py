"""The live state is rebuilt at start, not guessed: what was stored after the last snapshot
is replayed, and a message already counted is never counted again (SIGKILL, real process)."""

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from facilities.mosquitto import PrivateBroker
from simulators.client import DeviceClient
from tests.support.db import query
from tests.support.devices import DeviceFactory
from tests.support.poll import wait_for
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

STATION = "cs-11"


def _saved_at(db: str | Path) -> float:
    rows = query(db, "SELECT saved_at FROM live_state WHERE device = ?", STATION)
    return float(rows[0][0]) if rows else 0.0  # type: ignore[arg-type]


def _saved_state(db: str | Path) -> str:
    rows = query(db, "SELECT state FROM live_state WHERE device = ?", STATION)
    return str(rows[0][0]) if rows else ""


def _port(service: ServiceProcess, port: int) -> dict[str, object]:
    body = httpx.get(f"http://127.0.0.1:{service.port}/api/stations/{STATION}", timeout=5).json()
    found: dict[str, object] = next(p for p in body["ports"] if p["port"] == port)
    return found


def _acknowledged(service: ServiceProcess, kind: str) -> float:
    """Messages of `kind` stored and acknowledged (counted after the ack)."""
    text = httpx.get(f"http://127.0.0.1:{service.port}/metrics", timeout=5).text
    line = f'facilities_messages_ingested_total{{kind="{kind}"}} '
    return sum(float(row[len(line) :]) for row in text.splitlines() if row.startswith(line))


def _send(client: DeviceClient, kind: str, body: dict[str, object]) -> None:
    client.publish_raw(f"facilities/charging/{STATION}/{kind}", json.dumps(body)).wait_for_publish(
        10
    )


def _service(tmp_path: Path, broker: PrivateBroker, db: str) -> ServiceProcess:
    name = f"replay-{uuid.uuid4().hex[:6]}"
    return ServiceProcess(broker, db, client_id=name, log=tmp_path / "service.log")


async def _port_1_free_and_saved(service: ServiceProcess, client: DeviceClient) -> None:
    """Port 1 reported idle and shown free; return right after the next snapshot."""
    idle = {"port": 1, "state": "idle", "power_w": 0.0}
    _send(client, "telemetry", {"seq": 1, "ts": time.time(), "ports": [idle]})
    await wait_for(lambda: _port(service, 1)["free"] is True, what="port 1 free")
    await _right_after_a_snapshot(service.db)


async def _right_after_a_snapshot(db: str | Path) -> None:
    """Return just after the service saved its live state (every 5 s): the next snapshot is
    seconds away, so what follows is acknowledged but not in the saved state."""
    before = _saved_at(db)
    await wait_for(lambda: _saved_at(db) > before, timeout_s=15, what="a snapshot")


async def test_a_port_state_acknowledged_just_before_a_crash_is_not_forgotten(
    tmp_path: Path,
    broker: PrivateBroker,
    device: DeviceFactory,
    store_target: str,
) -> None:
    """A charger plugged in changes no alert, so only the next snapshot (5 s) would save it:
    acknowledged and then SIGKILLed before that, it comes back from the replay."""
    service = _service(tmp_path, broker, store_target).start()
    db = service.db
    client = device(STATION)
    try:
        await _port_1_free_and_saved(service, client)
        charging = {"port": 1, "state": "charging", "power_w": 180.0}
        _send(client, "telemetry", {"seq": 2, "ts": time.time(), "ports": [charging]})
        await wait_for(
            lambda: _acknowledged(service, "station_telemetry") == 2, what="acknowledged"
        )
        service.kill()
        assert '"charging"' not in _saved_state(db)  # the saved state predates it
        service.start()
        assert _port(service, 1)["state"] == "charging"
        assert _port(service, 1)["free"] is False
    finally:
        if service.process and service.process.poll() is None:
            service.kill()


async def test_a_fault_acknowledged_just_before_a_crash_is_not_forgotten(
    tmp_path: Path,
    broker: PrivateBroker,
    device: DeviceFactory,
    store_target: str,
) -> None:
    """A fault raises its alert: the device's state is saved with it (and what came after is
    replayed), so after a SIGKILL the fault is still there and the alert does not clear."""
    service = _service(tmp_path, broker, store_target).start()
    db = service.db
    client = device(STATION)
    try:
        await _port_1_free_and_saved(service, client)
        fault = {"seq": 2, "ts": time.time(), "type": "fault", "port": 1, "code": "over_current"}
        _send(client, "event", fault)
        await wait_for(
            lambda: (
                query(db, "SELECT state FROM alerts WHERE rule = 'device_fault'") == [("active",)]
            ),
            what="device_fault raised",
        )
        await wait_for(
            lambda: _acknowledged(service, "station_event") == 1, what="the event acknowledged"
        )
        service.kill()
        service.start()
        after_start = time.time()
        # the rules have ticked a few times since the start: a forgotten fault would have
        # started the alert's clear countdown
        await wait_for(
            lambda: _saved_at(db) > after_start, timeout_s=15, what="a snapshot after the start"
        )
        assert _port(service, 1)["free"] is False
        assert _port(service, 1)["state"] == "fault"
        assert query(db, "SELECT state, clear_since FROM alerts WHERE rule = 'device_fault'") == [
            ("active", None)
        ]
    finally:
        if service.process and service.process.poll() is None:
            service.kill()


async def test_a_sample_counted_before_a_crash_is_not_counted_again(
    tmp_path: Path,
    broker: PrivateBroker,
    device: DeviceFactory,
    store_target: str,
) -> None:
    """One 1,200 W sample (over the port's 1,000 W once: no overload yet) is in the saved
    state; after a SIGKILL the same message comes again (a redelivery): still one sample."""
    service = _service(tmp_path, broker, store_target).start()
    db = service.db
    client = device(STATION)
    try:
        over = {
            "seq": 10,
            "ts": time.time(),
            "ports": [{"port": 2, "state": "charging", "power_w": 1200.0}],
        }
        _send(client, "telemetry", over)
        await wait_for(
            lambda: (
                query(db, "SELECT count(*) FROM port_samples WHERE station = ?", STATION) == [(1,)]
            ),
            what="the sample stored",
        )
        await wait_for(lambda: "1200" in _saved_state(db), timeout_s=15, what="it in a snapshot")
        service.kill()
        service.start()
        _send(client, "telemetry", over)  # the same message again
        later = {
            "seq": 11,
            "ts": float(over["ts"]) + 10,  # type: ignore[arg-type]
            "ports": [{"port": 2, "state": "charging", "power_w": 300.0}],
        }
        _send(client, "telemetry", later)
        await wait_for(lambda: _port(service, 2)["power_w"] == 300.0, what="the later sample")
        assert query(db, "SELECT count(*) FROM alerts WHERE rule = 'port_overload'") == [(0,)]
        assert query(db, "SELECT count(*) FROM commands") == [(0,)]
    finally:
        if service.process and service.process.poll() is None:
            service.kill()
