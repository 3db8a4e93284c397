"""Edges of the buffered receive path (facilities/mqtt/buffered.py) against a real Mosquitto:
over TLS (mqtts://, SSLSocket's own pending bytes under ours), and a connection the network
cuts in the middle of a packet of a backlog (what was read of the old connection must never
reach the new one); and when the PUBACKs of a batch leave while paho's thread is handling a
backlog already read."""

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from facilities.mosquitto import PrivateBroker, free_port
from facilities.mqtt.session import BrokerLink, BrokerUrl, Delivery
from facilities.mqtt.topics import Topics
from facilities.site import Site
from simulators.client import DeviceClient
from tests.support.devices import DeviceFactory
from tests.support.poll import wait_for
from tests.support.tls import make_certificates

TOPIC = "facilities/charging/cs-12/telemetry"


def _payloads(count: int, tag: str) -> list[bytes]:
    return [f"{tag}{n}:".encode() + b"x" * (n * 37 % 20_000) for n in range(count)]


class CuttingProxy:
    """Forwards each connection to `upstream`; the first connection's broker-to-client
    direction is cut (both sides dropped) after exactly `cut_after` bytes."""

    def __init__(self, upstream: int, cut_after: int) -> None:
        self.upstream = upstream
        self.cut_after = cut_after
        self.port = free_port()
        self.connections = 0
        self.cut_done = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        for sock in self._sockets:
            _drop(sock)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            self._sockets += [client, upstream]
            self.connections += 1
            limit = self.cut_after if self.connections == 1 else None
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, limit), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: limit - sent])
                    self.cut_done.set()
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            _drop(src)
            _drop(dst)


def _drop(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


async def test_a_backlog_over_tls_arrives_whole_and_in_order(
    tmp_path: Path, site: Site, device: DeviceFactory
) -> None:
    """mqtts://: SSLSocket reads a record (16 KiB) at a time and keeps decrypted bytes of its
    own (`pending`); the backlog must still arrive whole, in order, and the acks take."""
    certificates = make_certificates(tmp_path / "certs")
    tls_port = free_port()
    broker = PrivateBroker(
        tmp_path / "broker",
        site,
        bridge=(
            f"\nlistener {tls_port} 127.0.0.1\nuse_username_as_clientid true\n"
            f"cafile {certificates.ca}\ncertfile {certificates.cert}\n"
            f"keyfile {certificates.key}\n"
        ),
    ).start()
    try:
        client_id = f"tls-{uuid.uuid4().hex[:6]}"
        plain = BrokerUrl.parse(broker.service_url(client_id))
        url = BrokerUrl(
            "127.0.0.1", tls_port, plain.username, plain.password, tls=True,
            ca_file=str(certificates.ca),
        )  # fmt: skip
        got: list[tuple[bytes, Delivery]] = []

        def link() -> BrokerLink:
            return BrokerLink(
                url,
                client_id=client_id,
                topics=Topics(),
                on_message=lambda _t, raw, delivery: got.append((raw, delivery)),
                subscriptions=[TOPIC],
            )

        first = link()
        await first.connect(timeout_s=5)
        await wait_for(lambda: first.subscribed, what="the subscription")
        await first.close()

        payloads = _payloads(1500, "t")
        station = DeviceClient(BrokerUrl.parse(broker.url("cs-12")), client_id="cs-12").connect()
        try:
            for payload in payloads:
                station.publish_raw(TOPIC, payload)
            station.publish_raw(TOPIC, b"end").wait_for_publish(10)
        finally:
            station.close()

        second = link()
        await second.connect(timeout_s=5)
        await wait_for(lambda: len(got) == len(payloads) + 1, timeout_s=30, what="the backlog")
        assert [raw for raw, _ in got] == [*payloads, b"end"]
        assert second.ack([d for _, d in got]) == len(got)
        await second.close()

        got.clear()
        marker = DeviceClient(BrokerUrl.parse(broker.url("cs-12")), client_id="cs-12").connect()
        try:  # queued after whatever would be redelivered: a barrier, not a wait
            marker.publish_raw(TOPIC, b"marker").wait_for_publish(10)
        finally:
            marker.close()
        third = link()
        await third.connect(timeout_s=5)
        await wait_for(lambda: got, what="the marker")
        assert [raw for raw, _ in got] == [b"marker"]  # all acked over TLS: nothing came back
        third.ack([d for _, d in got])
        await third.close()
    finally:
        broker.stop()


async def test_a_connection_cut_mid_packet_hands_nothing_stale_to_the_next(
    broker: PrivateBroker, device: DeviceFactory
) -> None:
    """The network drops the link in the middle of a packet of a backlog: what was read of
    the old connection is never handed out on the new one; what was not acked comes again,
    whole, on the new one; every message handed out is one that was published."""
    client_id = f"cut-{uuid.uuid4().hex[:6]}"
    got: list[tuple[bytes, Delivery]] = []
    proxy = CuttingProxy(broker.port, cut_after=10**9)  # first connection: not cut
    credentials = BrokerUrl.parse(broker.service_url(client_id))

    def link(port: int) -> BrokerLink:
        url = BrokerUrl("127.0.0.1", port, credentials.username, credentials.password)
        return BrokerLink(
            url,
            client_id=client_id,
            topics=Topics(),
            on_message=lambda _t, raw, delivery: got.append((raw, delivery)),
            subscriptions=[TOPIC],
        )

    first = link(broker.port)
    await first.connect(timeout_s=5)
    await wait_for(lambda: first.subscribed, what="the subscription")
    await first.close()

    payloads = _payloads(1500, "c")
    station = device("cs-12")
    for payload in payloads:
        station.publish_raw(TOPIC, payload)
    station.publish_raw(TOPIC, b"end").wait_for_publish(10)

    # Cut after 1 MiB and a few bytes: inside some PUBLISH of the backlog (~15 MB in all),
    # with up to 64 KiB read and not yet handed out.
    proxy.close()
    proxy = CuttingProxy(broker.port, cut_after=1_048_576 + 77)
    second = link(proxy.port)
    try:
        await second.connect(timeout_s=5)
        runner = asyncio.create_task(second.run())
        await wait_for(lambda: proxy.cut_done.is_set(), timeout_s=30, what="the cut")
        await wait_for(lambda: second.reconnects >= 1, timeout_s=30, what="the reconnect")
        await wait_for(
            lambda: any(raw == b"end" for raw, _ in got), timeout_s=30, what="the backlog"
        )
        known = set(payloads) | {b"end"}
        assert all(raw in known for raw, _ in got)  # nothing torn, nothing stale
        by_generation: dict[int, list[bytes]] = {}
        for raw, delivery in got:
            by_generation.setdefault(delivery.generation, []).append(raw)
        # (the cut connection may hand out nothing: a reset drops what the kernel held)
        assert sorted(by_generation) in ([2], [1, 2])
        old, new = by_generation.get(1, []), by_generation[2]
        assert old == payloads[: len(old)]  # the cut connection: a prefix, in order
        # nothing acked on the cut one: all of it again, in order, on the new one
        assert new == [*payloads, b"end"]
        current = [d for _, d in got if d.generation == max(by_generation)]
        assert second.ack(current) == len(current)
    finally:
        await second.close()
        await runner
        proxy.close()


async def test_acks_leave_while_a_read_backlog_is_handled(
    broker: PrivateBroker, device: DeviceFactory
) -> None:
    """The PUBACKs of a batch are queued by the writer while paho's thread goes through a
    backlog it has already read: they must leave soon (they did after at most one message
    before the buffered reads), not after the up to PACKETS_PER_PASS messages of the pass.
    Each message here takes 20 ms to handle (the rules, a decode, a window wait)."""
    client_id = f"lag-{uuid.uuid4().hex[:6]}"
    got: list[tuple[bytes, Delivery]] = []
    first_in = threading.Event()

    def on_message(_t: str, raw: bytes, delivery: Delivery) -> None:
        got.append((raw, delivery))
        first_in.set()
        time.sleep(0.02)

    def link() -> BrokerLink:
        return BrokerLink(
            BrokerUrl.parse(broker.service_url(client_id)),
            client_id=client_id,
            topics=Topics(),
            on_message=on_message,
            subscriptions=[TOPIC],
        )

    first = link()
    await first.connect(timeout_s=5)
    await wait_for(lambda: first.subscribed, what="the subscription")
    await first.close()

    station = device("cs-12")
    payloads = [f"{n}".encode() for n in range(400)]  # ~10 B each: all in one read
    for payload in payloads:
        station.publish_raw(TOPIC, payload)
    station.publish_raw(TOPIC, b"end").wait_for_publish(10)

    second = link()
    await second.connect(timeout_s=5)
    await asyncio.to_thread(first_in.wait, 10)
    await asyncio.sleep(0.05)
    assert second.ack([got[0][1]]) == 1
    queued = time.monotonic()
    client = second._client  # what paho still has to write, nothing more
    await wait_for(lambda: not client.want_write(), timeout_s=30, what="the ack written")
    waited = time.monotonic() - queued
    await wait_for(lambda: len(got) == len(payloads) + 1, timeout_s=30, what="the backlog")
    assert second.ack([d for _, d in got[1:]]) == len(payloads)
    await second.close()
    assert waited < 0.5, f"the PUBACK waited {waited:.2f} s for the pass to end"


class _BrokenBroker:
    """A TCP server that answers each CONNECT with a CONNACK (MQTT 5, success) and, on the
    first connection only, then sends `bad`: what only a broken broker or a corrupted stream
    would send. Counts the connections it took."""

    def __init__(self, bad: bytes) -> None:
        self.bad = bad
        self.port = free_port()
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            self._open.append(conn)
            self.connections += 1
            conn.recv(65536)  # the CONNECT
            conn.sendall(b"\x20\x03\x00\x00\x00")
            if self.connections == 1:
                conn.sendall(self.bad)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._open:
            _drop(conn)
        self._server.close()


@pytest.mark.parametrize(
    "bad",
    [b"\x32\x00", b"\x32\x01\x00", b"\x00\x00\x30\x00"],
    ids=["publish-without-topic-length", "publish-cut-in-topic-length", "packet-type-0"],
)
async def test_a_malformed_packet_from_the_broker_ends_the_connection_not_the_reader(
    bad: bytes,
) -> None:
    """paho refuses a malformed packet and disconnects; the link then reconnects. Handled
    by the link's own parsing, it must do the same, not end paho's thread (which would leave
    the link saying it is connected while nothing is read any more)."""
    broken = _BrokenBroker(bad)
    link = BrokerLink(
        BrokerUrl.parse(f"mqtt://service:secret@127.0.0.1:{broken.port}"),
        client_id="service",
        topics=Topics(),
        on_message=lambda _topic, _raw, _delivery: None,
        subscriptions=[],
    )
    try:
        await link.connect(timeout_s=5)
        keeping = asyncio.create_task(link.run())
        await wait_for(lambda: link.reconnects >= 1, timeout_s=15, what="a reconnect")
        assert broken.connections >= 2
        await link.close()
        await asyncio.wait_for(keeping, 5)
    finally:
        broken.close()
