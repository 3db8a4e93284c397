"""The broker link reads its socket many packets at a time and acknowledges a batch in one
write (facilities/mqtt/buffered.py; docs/performance.md, "paho's receive path"): what it
hands over must be exactly what was published, in order, and the acks exactly the ones
asked for, through the session's real Mosquitto."""

import socket
import threading
import uuid

from facilities.mosquitto import PrivateBroker
from facilities.mqtt.buffered import READ_SIZE, BufferedSocket
from facilities.mqtt.session import BrokerLink, BrokerUrl, Delivery
from facilities.mqtt.topics import Topics
from tests.support.devices import DeviceFactory
from tests.support.poll import wait_for

TOPIC = "facilities/charging/cs-12/telemetry"


def test_a_buffered_socket_hands_out_what_was_sent_in_the_sizes_asked() -> None:
    left, right = socket.socketpair()
    with left, right:
        sent = bytes(range(256)) * 1000  # 256,000 bytes: several reads of READ_SIZE

        def send() -> None:
            right.sendall(sent)  # more than the socket holds: read meanwhile
            right.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        buffered = BufferedSocket(left)
        got = bytearray()
        sizes = [1, 1, 3, 700, 1, 70_000, 2]
        at = 0
        while True:
            size = sizes[at % len(sizes)]
            at += 1
            chunk = buffered.recv(size)
            if not chunk:
                break
            assert len(chunk) <= size
            got += chunk
            assert buffered.pending() < READ_SIZE
        sender.join(10)
        assert bytes(got) == sent
        assert buffered.pending() == 0
        assert buffered.fileno() == left.fileno()


def test_what_is_read_and_not_handed_out_is_pending() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"abcdef")
        buffered = BufferedSocket(left)
        assert buffered.recv(1) == b"a"
        assert buffered.pending() == 5
        assert buffered.recv(2) == b"bc"
        assert buffered.recv(10) == b"def"
        assert buffered.pending() == 0
        left.setblocking(False)
        try:
            buffered.recv(1)
        except BlockingIOError:
            pass  # nothing read and nothing sent: as the socket itself says
        else:
            raise AssertionError("a read with nothing sent must not return data")


async def test_a_backlog_arrives_whole_in_order_and_only_the_acked_part_is_kept_away(
    broker: PrivateBroker, device: DeviceFactory
) -> None:
    client_id = f"reads-{uuid.uuid4().hex[:6]}"
    got: list[tuple[bytes, Delivery]] = []

    def link() -> BrokerLink:
        return BrokerLink(
            BrokerUrl.parse(broker.service_url(client_id)),
            client_id=client_id,
            topics=Topics(),
            on_message=lambda _topic, raw, delivery: got.append((raw, delivery)),
            subscriptions=[TOPIC],
        )

    first = link()
    await first.connect(timeout_s=5)
    await wait_for(lambda: first.subscribed, what="the subscription")
    await first.close()  # the session stays: the broker queues what comes meanwhile

    # Sizes across packet boundaries and remaining lengths of one to three bytes.
    payloads = [f"{n}:".encode() + b"x" * (n * 37 % 20_000) for n in range(1500)]
    station = device("cs-12")
    for payload in payloads:
        station.publish_raw(TOPIC, payload)
    station.publish_raw(TOPIC, b"end").wait_for_publish(10)

    second = link()
    await second.connect(timeout_s=5)
    await wait_for(lambda: len(got) == len(payloads) + 1, timeout_s=30, what="the backlog")
    assert [raw for raw, _ in got] == [*payloads, b"end"]
    acked = [delivery for _, delivery in got[::2]]  # every other one
    assert second.ack(acked) == len(acked)
    await second.close()  # its `offline`, acknowledged by the broker, follows the acks

    # Redelivered first on the next connection, then what was queued: a marker after them.
    again = [raw for raw, _ in got[1::2]]
    got.clear()
    station.publish_raw(TOPIC, b"marker").wait_for_publish(10)
    third = link()
    await third.connect(timeout_s=5)
    await wait_for(lambda: b"marker" in [raw for raw, _ in got], timeout_s=30, what="marker")
    assert [raw for raw, _ in got] == [*again, b"marker"]  # exactly the ones not acked
    assert third.ack([delivery for _, delivery in got]) == len(again) + 1
    await third.close()
