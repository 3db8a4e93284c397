"""A /healthz ping that times out must never cost a stored message (PostgreSQL).

The ping runs on the ingest's own connection, so on PostgreSQL it can land between the
statements of an ingest batch's transaction. When the server is slow to answer it (a loaded
machine: seen once in bench/partitions.py, 89 of 30,000 messages never stored), the 1 s
timeout cancels it in the server, which aborts that transaction; PostgreSQL then answers the
batch's COMMIT with a ROLLBACK, not an error, and the batch was acknowledged unstored.

Here a proxy in front of PostgreSQL makes the server slow for the ping alone: it turns the
ping's `SELECT 1` into a two-second sleep, while /healthz is asked for all along."""

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
from pathlib import Path

import httpx
import pytest

from facilities.mosquitto import free_port
from facilities.mqtt.session import BrokerUrl
from facilities.site import Site
from simulators.client import DeviceClient
from tests.support.db import query
from tests.support.payloads import reading, telemetry
from tests.support.poll import WaitTimeoutError, wait_for
from tests.support.postgres import PrivatePostgres
from tests.support.processes import ServiceProcess, start_broker

TOPIC = "facilities/charging/cs-01/telemetry"
MESSAGES = 3000
# The ping's statement, as the simple-query message psycopg's client cursor sends, and what
# the proxy sends instead: one a server too busy to answer within the 1 s timeout would take.
PING = b"Q" + struct.pack("!I", 4 + len(b"SELECT 1\x00")) + b"SELECT 1\x00"
SLOW = b"SELECT pg_sleep(2)\x00"
SLOW_PING = b"Q" + struct.pack("!I", 4 + len(SLOW)) + SLOW


class SlowPingProxy:
    """Forwards TCP to PostgreSQL, the ping's statement made slow (a whole message matched
    within one read: the ping is sent alone, 14 bytes); everything else as it is."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.slowed = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_server: bool) -> None:
        try:
            while data := src.recv(65536):
                if to_server and PING in data:
                    data = data.replace(PING, SLOW_PING)
                    self.slowed += 1
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()


def _payload(seq: int) -> str:
    ports = [reading(p, power_w=300.0) for p in range(1, 11)]
    return json.dumps(telemetry(seq, ports, ts=time.time() + seq * 0.001, temp_c=30.0))


@pytest.mark.slow
async def test_a_ping_timing_out_inside_an_ingest_batch_loses_nothing(
    tmp_path: Path, site: Site, postgres: PrivatePostgres, pg_url: str
) -> None:
    proxy = SlowPingProxy(postgres.port)
    # no TLS or GSS negotiation: the proxy sees the protocol's messages as they are
    db = pg_url.replace(f":{postgres.port}/", f":{proxy.port}/") + "?sslmode=disable"
    db += "&gssencmode=disable"
    broker = start_broker(tmp_path / "broker", site)
    service = ServiceProcess(broker, db, client_id="ping", log=tmp_path / "service.log")
    asking = True

    def ask_health() -> None:  # as a monitor (or a bench waiting for 200) does
        while asking:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{service.port}/healthz", timeout=5)
            time.sleep(0.05)

    try:
        service.launch()

        def subscribed() -> bool:  # healthy but for the ping, which the proxy makes slow
            try:
                answer = httpx.get(f"http://127.0.0.1:{service.port}/healthz", timeout=5)
            except httpx.HTTPError:
                return False
            reasons = answer.json().get("detail", "").split("; ")
            return answer.status_code == 200 or all(
                r.startswith("database not answering") for r in reasons
            )

        await wait_for(subscribed, timeout_s=30, what="the service subscribed")
        asker = threading.Thread(target=ask_health, daemon=True)
        asker.start()
        device = DeviceClient(BrokerUrl.parse(broker.url("cs-01")), client_id="cs-01").connect()

        def publish() -> None:
            window = []
            for seq in range(MESSAGES):
                window.append(device.publish_raw(TOPIC, _payload(seq)))
                if len(window) == 200:
                    for info in window:
                        info.wait_for_publish(30)
                    window.clear()
                    time.sleep(0.05)  # spread over several pings
            for info in window:
                info.wait_for_publish(30)

        await asyncio.to_thread(publish)

        def stored() -> int:
            count = query(pg_url, "SELECT count(*) FROM station_samples")[0][0]
            assert isinstance(count, int)
            return count

        with contextlib.suppress(WaitTimeoutError):  # what is stored then is asserted below
            await wait_for(lambda: stored() >= MESSAGES, timeout_s=60, what="all stored")
        asking = False
        asker.join(10)
        assert proxy.slowed > 0, "no ping went through the proxy"
        assert stored() == MESSAGES, service.log.read_text()[-3000:]
    finally:
        asking = False
        if service.process and service.process.poll() is None:
            service.kill()
        broker.stop()
        proxy.close()
