"""At least once, never twice: SIGKILL, SIGTERM and a broker restart lose nothing."""

import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager

from facilities.api.app import create_app
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl
from facilities.service import run
from facilities.settings import Settings
from facilities.site import Site
from facilities.wiring import build
from simulators.client import DeviceClient
from tests.support.db import query
from tests.support.paths import EXAMPLE_SITE
from tests.support.payloads import reading, telemetry
from tests.support.poll import wait_for, wait_until
from tests.support.processes import ServiceProcess, start_broker

TOPIC = "facilities/charging/cs-01/telemetry"


def _payload(seq: int) -> str:
    ports = [reading(1, power_w=300.0, energy_wh=seq * 0.1)]
    return json.dumps(telemetry(seq, ports, ts=1_764_400_000.0 + seq * 0.01, temp_c=30.0))


class Publisher(threading.Thread):
    """A station publishing `total` QoS 1 messages with distinct seq, as fast as the broker
    takes them (at most ~1,000 unacknowledged, under paho's 65,535 message-id wrap)."""

    def __init__(self, broker: PrivateBroker, total: int) -> None:
        super().__init__(name="publisher", daemon=True)
        url = BrokerUrl.parse(broker.url("cs-01"))
        self.client = DeviceClient(url, client_id="cs-01").connect()
        self.total = total
        self.acked = 0

    def run(self) -> None:
        window = []
        for seq in range(self.total):
            window.append(self.client.publish_raw(TOPIC, _payload(seq)))
            if len(window) == 500:
                for info in window:
                    info.wait_for_publish(30)
                self.acked += len(window)
                window.clear()
        for info in window:
            info.wait_for_publish(30)
        self.acked += len(window)


def _stored(db: str | Path) -> int:
    try:
        return int(query(db, "SELECT count(*) FROM station_samples")[0][0])
    except (sqlite3.Error, psycopg.Error):  # not made yet
        return 0


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    await wait_for(condition, timeout_s=timeout_s, what=what)


@pytest.mark.slow
async def test_20000_messages_survive_two_sigkills_exactly_once(
    tmp_path: Path, site: Site, store_target: str
) -> None:
    broker = start_broker(tmp_path / "broker", site)
    db = store_target
    service = ServiceProcess(broker, db, client_id="crash", log=tmp_path / "service.log")
    try:
        service.start()
        publisher = Publisher(broker, 20_000)
        publisher.start()
        for kill_at in (4_000, 12_000):
            await _until(lambda n=kill_at: _stored(db) >= n, f"{kill_at} stored")
            service.kill()
            killed_at = publisher.acked
            # devices keep publishing while the service is down: the broker queues for it
            await _until(lambda k=killed_at: publisher.acked >= min(20_000, k + 2_000), "backlog")
            service.start()
        publisher.join(60)
        assert publisher.acked == 20_000
        await _until(lambda: _stored(db) >= 20_000, "all 20,000 stored")
        code, seconds = service.terminate()
        assert code == 0, service.log.read_text()[-3000:]
        assert seconds < 5
        assert query(db, "SELECT count(*), count(DISTINCT seq) FROM station_samples") == [
            (20_000, 20_000)
        ]
        assert query(db, "SELECT count(*) FROM port_samples") == [(20_000,)]
        assert query(db, "SELECT min(seq), max(seq) FROM station_samples") == [(0, 19_999)]
    finally:
        if service.process and service.process.poll() is None:
            service.kill()
        broker.stop()


@pytest.mark.slow
async def test_sigterm_under_load_commits_acks_and_exits_within_5_s(
    tmp_path: Path, site: Site, store_target: str
) -> None:
    broker = start_broker(tmp_path / "broker", site)
    db = store_target
    service = ServiceProcess(broker, db, client_id="term", log=tmp_path / "service.log")
    try:
        service.start()
        publisher = Publisher(broker, 8_000)
        publisher.start()
        await _until(lambda: _stored(db) >= 1_000, "1,000 stored")
        code, seconds = service.terminate()
        assert code == 0, service.log.read_text()[-3000:]
        assert seconds < 5
        assert "stopped" in service.log.read_text()
        publisher.join(60)
        service.start()  # what was not acked before the stop is redelivered now
        await _until(lambda: _stored(db) >= 8_000, "all 8,000 stored")
        service.terminate()
        assert query(db, "SELECT count(*), count(DISTINCT seq) FROM station_samples") == [
            (8_000, 8_000)
        ]
    finally:
        if service.process and service.process.poll() is None:
            service.kill()
        broker.stop()


async def test_broker_restart_health_503_then_reconnect_and_resume(
    tmp_path: Path, site: Site, store_target: str
) -> None:
    broker = start_broker(tmp_path / "broker", site)
    settings = Settings(
        site=EXAMPLE_SITE,
        broker=broker.url(),
        db=store_target,
        connect_timeout_s=5.0,
    )
    service = build(settings, site)
    app = create_app(service.http)
    try:
        async with run(service), LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await wait_for(lambda: service.link.subscribed, what="subscription")
                assert (await client.get("/healthz")).status_code == 200

                broker.stop()
                await wait_for(lambda: not service.link.connected, what="link lost")
                down = await client.get("/healthz")
                assert down.status_code == 503
                assert down.json()["error"] == "unavailable"
                assert "broker link down" in down.json()["detail"]

                # the broker comes back (same port, same persistence) while a station,
                # reconnecting on its own, publishes: the service resubscribes and ingests
                broker.start()
                await wait_for(lambda: service.link.subscribed, timeout_s=60, what="reconnect")
                assert (await client.get("/healthz")).status_code == 200
                station = DeviceClient(
                    BrokerUrl.parse(broker.url("cs-01")), client_id="cs-01"
                ).connect()
                station.publish_raw(TOPIC, _payload(1)).wait_for_publish(5)
                station.close()
                await wait_for(lambda: _stored(settings.db) == 1, what="message after restart")
                assert service.link.reconnects >= 1
    finally:
        broker.stop()


@pytest.mark.slow
def test_sigterm_while_the_broker_is_down_still_exits_0_within_5_s(
    tmp_path: Path, site: Site
) -> None:
    """systemd stopping the broker and the service together: the service is between two
    reconnect attempts (backoff up to 30 s) when SIGTERM comes, and must not wait them out."""
    broker = start_broker(tmp_path / "broker", site)
    service = ServiceProcess(
        broker,
        tmp_path / "f.db",
        client_id="down",
        log=tmp_path / "service.log",
        log_level="DEBUG",  # the reconnect attempts are logged at DEBUG
    )
    try:
        service.start()
        broker.stop()
        port = service.port
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 503,
            timeout_s=20,
            what="the service to notice the broker was gone",
            interval_s=0.05,
            ignoring=(httpx.HTTPError,),
        )
        # two failed reconnect attempts: it is inside the backoff, not at its first try
        wait_until(
            lambda: "reconnect 2 failed" in service.log.read_text(errors="replace"),
            timeout_s=20,
            what="a second reconnect attempt in the log",
            interval_s=0.05,
        )
        code, seconds = service.terminate(timeout_s=10)
        assert code == 0, service.log.read_text()[-2000:]
        assert seconds < 5.0, f"took {seconds:.1f} s to stop"
    finally:
        if service.process and service.process.poll() is None:
            service.kill()
        broker.stop()
