"""paho's client reading its socket many packets at a time.

paho 2 reads each packet with at least three `recv` calls (the command byte, each byte of
the remaining length, the rest) and goes back to `select` after every packet it handles
(its `loop_read` reads one packet unless QoS 2 messages are in flight). Under a backlog
that is four system calls and a pass of its loop per message, a fifth of the service's
CPU for one-port telemetry (docs/performance.md, "paho's receive path"). Here the socket
is read up to 64 KiB at a time and the packets already read are handled before paho goes
back to `select`; a packet read whole is handed to paho at once rather than through its
reads of a few bytes each. paho's protocol handling is its own but for one case: a QoS 1
PUBLISH without MQTT 5 properties (what devices send) is taken apart here and handed to
`on_delivery` as its topic, payload and packet id, without the `Properties` object and the
three copies paho makes of each, nor its `MQTTMessage` (docs/performance.md, "A PUBLISH
taken apart once" and "A message kept as its rows"). It leans on paho 2.2's internals
(`_create_socket`, `_sock`, `_packet_queue`, `_packet_read`, `_in_packet`, `_handle_publish`,
`_handle_on_message`, `_on_message_filtered`, `_callback_mutex`, `_in_callback_mutex`,
`_msgtime_mutex`, `_last_bytes_received`, `_manual_ack`, `_send_puback`): pyproject.toml
holds paho to 2.2.x, and tests/test_broker_reads*.py run through a real broker, plain and
over TLS, with and without properties.
"""

import struct
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes

# One read from the socket: a backlog of ten-port messages (~1.4 KB each) is ~45 of them.
READ_SIZE = 65536
# Packets handled from what was read before paho's loop runs again (its keepalive, its
# writes, and its `select`, which lets go of the interpreter lock): few, so that the event
# loop (cut-off commands, the API) is not kept waiting for the lock behind a long pass
# without a system call. 200 were tried first, and whole test runs then timed out waiting for
# commands under load; two of those were later found to be a race in the rules (a cut-off
# re-asserted right after its ack was dropped), not the pass. 10 were kept until 2026-12-06;
# 30 took 2-5 µs less CPU per four-port message in a drain, with the safety latency measured
# again (docs/performance.md, "Longer passes over what was read"). A pass still stops once
# something is queued to send (acks, cut-offs), checked after each of paho's reads, which
# take one packet (more while the service's own QoS 1 messages are in flight): `loop_read`.
PACKETS_PER_PASS = 30
PUBACK = PacketTypes.PUBACK << 4
PUBLISH_QOS_1 = PacketTypes.PUBLISH << 4 | 0x02  # the fixed header, but for DUP and RETAIN
_PUBACK = struct.Struct("!BBH")  # fixed header, remaining length 2, packet id: success


class BufferedSocket:
    """A connected socket (plain, TLS or paho's WebSocket wrapper) read `READ_SIZE` bytes at
    a time; paho asks for a few bytes and gets them from what was read. `pending()` tells
    paho that bytes are waiting, so that it does not wait in `select` for them (as it does
    for a TLS socket's own buffer)."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        # a TLS socket's own decrypted bytes (None for a plain one): looked up once, not per call
        self._inner_pending = getattr(sock, "pending", None)
        self._buffer = b""
        self._at = 0

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes: from what was read, or from one read of the socket."""
        left = len(self._buffer) - self._at
        if left <= 0:
            data: bytes = self._sock.recv(max(size, READ_SIZE))
            if len(data) <= size:
                return data  # b"" (closed) included
            self._buffer, self._at = data, 0
            left = len(data)
        take = min(size, left)
        chunk = self._buffer[self._at : self._at + take]
        self._at += take
        if self._at >= len(self._buffer):
            self._buffer, self._at = b"", 0
        return chunk

    def take_packet(self) -> tuple[int, bytes] | None:
        """The next MQTT packet, if all of it was read: (first byte, the rest after the
        remaining length). None when it is not all here (paho then reads it piece by piece,
        from what was read and from the socket) or its remaining length is malformed."""
        buffer, at = self._buffer, self._at
        end = len(buffer)
        if at >= end or not buffer[at] & 0xF0:
            return None  # nothing here, or packet type 0 (reserved): paho refuses it itself
        length, multiplier, i = 0, 1, at + 1
        while True:
            if i >= end or i > at + 4:
                return None
            byte = buffer[i]
            length += (byte & 127) * multiplier
            multiplier *= 128
            i += 1
            if not byte & 128:
                break
        if i + length > end:
            return None
        self._at = i + length
        if self._at >= end:
            self._buffer, self._at = b"", 0
        return buffer[at], buffer[i : i + length]

    def pending(self) -> int:
        """Bytes read and not yet handed to paho (and a TLS socket's own)."""
        inner = self._inner_pending
        return len(self._buffer) - self._at + (inner() if inner is not None else 0)

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def __getattr__(self, name: str) -> Any:
        # send, setblocking, close, setsockopt, do_handshake, ...: the socket's own
        return getattr(self._sock, name)


class BufferedClient(paho.Client):
    """paho's client over a `BufferedSocket`, handling every packet already read before it
    goes back to `select` (at most `PACKETS_PER_PASS` at a time)."""

    # Called with (topic, payload, packet id) for a QoS 1 PUBLISH without properties, when
    # set; every other message goes to paho's `on_message` (`_deliver_publish`).
    on_delivery: Callable[[str, bytes, int], None] | None = None
    # Whether callbacks were added per filter: noted as they are added and removed, not asked
    # of paho's matcher under its lock for every message.
    _filtered = False

    def message_callback_add(self, sub: str, callback: paho.CallbackOnMessage) -> None:
        with self._callback_mutex:  # a lock paho takes again inside: added and noted at once
            super().message_callback_add(sub, callback)
            self._note_filters()

    def message_callback_remove(self, sub: str) -> None:
        with self._callback_mutex:
            super().message_callback_remove(sub)
            self._note_filters()

    def _note_filters(self) -> None:
        self._filtered = bool(self._on_message_filtered._root._children)

    def _create_socket(self) -> Any:
        return BufferedSocket(super()._create_socket())

    def ack_many(self, mids: Sequence[int]) -> None:
        """PUBACK each of `mids` (QoS 1, manual acks) as one write: paho's `ack` queues a
        packet, wakes its loop and sends it by itself, for each message."""
        if mids:
            blob = b"".join([_PUBACK.pack(PUBACK, 2, mid) for mid in mids])
            self._packet_queue(PUBACK, blob, 0, 0)

    def _packet_read(self) -> MQTTErrorCode:
        # A packet read whole is delivered from here when it is a device's PUBLISH (below), or
        # goes to paho as if paho had read it (three `recv` calls or more and a lock for each
        # piece otherwise); paho's own reads take any other.
        sock = self._sock
        if self._in_packet["command"] == 0 and isinstance(sock, BufferedSocket):
            whole = sock.take_packet()
            if whole is not None:
                command, body = whole
                rc = self._deliver_publish(command, body)
                if rc is not None:
                    with self._msgtime_mutex:
                        self._last_bytes_received = paho.time_func()
                    return rc
                self._in_packet = {
                    "command": command,
                    "have_remaining": 1,
                    "remaining_count": [],
                    "remaining_mult": 1,
                    "remaining_length": len(body),
                    "packet": bytearray(body),
                    "to_process": 0,
                    "pos": 0,
                }
        return super()._packet_read()

    def _handle_publish(self) -> MQTTErrorCode:
        # a PUBLISH paho read piece by piece (it arrived cut across reads)
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        rc = self._deliver_publish(header, bytes(packet))
        return super()._handle_publish() if rc is None else rc

    def _deliver_publish(self, header: int, packet: bytes) -> MQTTErrorCode | None:
        """The service's common case, a QoS 1 PUBLISH without MQTT 5 properties (devices send
        none), taken apart here and handed to `on_delivery` as (topic, payload, packet id):
        paho's own parsing copies the packet three times and builds a `Properties` object,
        and its `MQTTMessage` a `Condition` and a lock, for each message. None for anything
        else (another packet, QoS, properties, a topic that is not UTF-8, callbacks added per
        filter, no `on_delivery`): paho's own handling, to `on_message`."""
        deliver = self.on_delivery
        if (
            deliver is None
            or header & 0xF6 != PUBLISH_QOS_1
            or self._protocol != MQTTProtocolVersion.MQTTv5
            or len(packet) < 2
        ):
            return None
        at = 2 + ((packet[0] << 8) | packet[1])  # after the topic
        if at == 2 or len(packet) < at + 3 or packet[at + 2] != 0:
            return None  # no topic (an alias), properties, or too short: paho says what
        try:
            topic = packet[2:at].decode("utf-8")
        except UnicodeDecodeError:
            return None
        if self._filters_added():
            return None
        mid = (packet[at] << 8) | packet[at + 1]
        self._call_back("on_delivery", deliver, topic, packet[at + 3 :], mid)
        if self._manual_ack:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._send_puback(mid)

    def _handle_on_message(self, message: paho.MQTTMessage) -> None:
        # paho matches every message's topic against the callbacks added per filter, even when
        # none were: its matcher builds a recursive closure per message, a reference cycle
        # that only the collector frees (~6 objects a message). Without per-filter callbacks
        # (the service adds none), `on_message` is called as paho would call it.
        if self._filters_added():
            super()._handle_on_message(message)
            return
        with self._callback_mutex:
            on_message = self.on_message
        if on_message is not None:
            self._call_back("on_message", on_message, self, self._userdata, message)

    def _filters_added(self) -> bool:
        """Whether callbacks were added per filter (`message_callback_add`)."""
        return self._filtered

    def _call_back(self, name: str, callback: Callable[..., object], *args: object) -> None:
        """Call a user callback as paho does: inside its callback lock, an exception logged
        and raised unless `suppress_exceptions`."""
        with self._in_callback_mutex:
            try:
                callback(*args)
            except Exception as err:
                self._easy_log(paho.MQTT_LOG_ERR, "Caught exception in %s: %s", name, err)
                if not self.suppress_exceptions:
                    raise

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        for _ in range(PACKETS_PER_PASS):
            sock = self._sock
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not isinstance(sock, BufferedSocket):
                break
            if sock.pending() <= 0 or self.want_write():
                break  # what is queued to send (acks, cut-offs) goes out first
            rc = super().loop_read(max_packets)
        return rc
