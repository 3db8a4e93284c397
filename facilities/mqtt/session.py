"""The broker link: paho in its own network thread, persistent session, manual ack, reconnect."""

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from facilities.errors import BrokerAuthError, BrokerError, BrokerTlsError
from facilities.mqtt.broker_url import BrokerUrl, session_client_id
from facilities.mqtt.buffered import BufferedClient
from facilities.mqtt.link_options import (
    AUTH_FAILURES,
    CONNACK_TIMEOUT_S,
    KEEPALIVE_S,
    backoff_delay,
    connect_properties,
    tls_context,
    untrusted,
)
from facilities.mqtt.topics import Topics

# BrokerUrl and session_client_id are the link's settings: importable from here too.
__all__ = ["BrokerLink", "BrokerUrl", "Delivery", "MessageHandler", "session_client_id"]

log = logging.getLogger(__name__)

# Topic filters per SUBSCRIBE packet: a partition's instance subscribes to each of its devices
# (`--partition`, docs/scaling.md), and 1,000 filters of ~35 bytes stay far below the shipped
# mosquitto.conf's max_packet_size of 256 KB, which drops a connection that sends more.
FILTERS_PER_SUBSCRIBE = 1000


class Delivery(NamedTuple):
    """How a message reached us: what acknowledging it takes. `mid` is the packet id; only
    QoS 1 and 2 have one (paho reports 0 for QoS 0, and a PUBACK for it is a protocol error
    for which Mosquitto drops the connection). `generation` is the connection it came on.
    One per message on paho's thread: a named tuple (docs/performance.md, "Tuples on the hot
    path")."""

    mid: int
    qos: int
    generation: int


MessageHandler = Callable[[str, bytes, Delivery], None]


class BrokerLink:
    """One MQTT connection with a persistent session whose messages we acknowledge ourselves.

    paho runs its network loop in its own thread (`loop_start`); `on_message` is called there.
    Acks may come from any thread: with the loop thread running, paho only queues them and
    wakes the loop. Each connection has a generation number: a message is acked only on the
    connection that delivered it, since packet ids mean nothing on the next connection (the
    broker redelivers what was not acked, MQTT 5 §4.4).
    """

    def __init__(
        self,
        url: BrokerUrl,
        *,
        client_id: str,
        topics: Topics,
        on_message: MessageHandler,
        subscriptions: Sequence[str] = (),
        copies: Sequence[str] = (),
    ) -> None:
        self.url = url
        self.client_id = client_id
        self.topics = topics
        self._subscriptions = list(subscriptions)
        # QoS 0, not our own: retained copies of other instances' live state (their latest
        # comes at each subscribe, nothing is queued for us while away, no ack to order)
        self._copies = list(copies)
        self._on_message = on_message
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.generation = 0
        self.connected = False
        self.subscribed = False
        self._subacks_due = 0
        self._refused = False
        self.reconnects = 0
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._lost = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        self.last_error = "not connected yet"
        self._client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            # MQTT 5 for message expiry on commands (a gate must never act on a late open).
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
            reconnect_on_failure=False,  # we reconnect ourselves, with jitter
        )
        if url.username:
            self._client.username_pw_set(url.username, url.password)
        self._tls_ready = not url.tls  # mqtts://: the CA file is read at the first connect
        self._client.will_set(topics.service_status(), "offline", qos=1, retain=True)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_subscribe = self._handle_subscribe
        self._client.on_message = self._handle_message
        self._client.on_delivery = self._handle_delivery

    # -- connection --------------------------------------------------------------------------

    async def connect(self, *, timeout_s: float) -> None:
        """Connect, retrying with backoff for up to `timeout_s`; raise BrokerError after.
        Refused credentials and an untrusted certificate are not retried."""
        self._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout_s
        attempt = 0
        while True:
            try:
                await self._connect_once()
                return
            except (BrokerAuthError, BrokerTlsError):
                raise
            except BrokerError as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrokerError(f"cannot reach broker {self.url.display()}: {exc}") from None
                delay = min(remaining, max(0.2, backoff_delay(attempt)))
                log.info("broker %s not reachable (%s), retrying", self.url.display(), exc)
                await asyncio.sleep(delay)
                attempt += 1

    async def _connect_once(self) -> None:
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        self._lost.clear()
        if not self._tls_ready:
            self._client.tls_set_context(tls_context(self.url))
            self._tls_ready = True
        try:
            await asyncio.to_thread(
                self._client.connect,
                self.url.host,
                self.url.port,
                KEEPALIVE_S,
                clean_start=False,  # persistent session: the broker queues for us while away
                properties=connect_properties(),
            )
        except ssl.SSLCertVerificationError as exc:
            self.last_error = f"TLS certificate not trusted: {exc.verify_message or exc}"
            raise BrokerTlsError(untrusted(self.url, exc)) from None
        except OSError as exc:
            self.last_error = exc.strerror or str(exc)
            raise BrokerError(self.last_error) from None
        self._client.loop_start()
        try:
            code = await asyncio.wait_for(self._connack, CONNACK_TIMEOUT_S)
        except TimeoutError:
            await self._stop_loop()
            self.last_error = "no CONNACK"
            raise BrokerError(f"no CONNACK within {CONNACK_TIMEOUT_S:.0f} s") from None
        if code.is_failure:
            await self._stop_loop()
            self.last_error = str(code)
            if code.value in AUTH_FAILURES:
                raise BrokerAuthError(
                    f"broker {self.url.display()} refused the credentials: {code}"
                )
            raise BrokerError(f"broker refused the connection: {code}")

    async def run(self) -> None:
        """Keep the link up until `close()`: on loss, reconnect with capped, jittered backoff.
        `close()` ends it at once, even between two attempts (a reconnect attempt clears the
        lost flag, so the loop checks `_closing` itself rather than wait for the flag)."""
        while not self._closing:
            await self._lost.wait()
            if self._closing:
                return
            await self._stop_loop()
            log.warning("lost the broker %s: %s", self.url.display(), self.last_error)
            attempt = 0
            while not self._closing:
                await self._pause(backoff_delay(attempt))
                if self._closing:
                    return
                try:
                    await self._connect_once()
                except BrokerAuthError:
                    raise
                except BrokerError as exc:
                    log.debug("reconnect %d failed: %s", attempt + 1, exc)
                    attempt = min(attempt + 1, 16)
                    continue
                self.reconnects += 1
                log.info("reconnected to the broker %s", self.url.display())
                break

    async def _pause(self, seconds: float) -> None:
        """Sleep between reconnect attempts, cut short by `close()`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)

    async def close(self, *, timeout_s: float = 2.0) -> None:
        """Say we are going offline, let queued acks out, and disconnect."""
        self._closing = True
        self._closed.set()
        self._lost.set()
        if self.connected:
            info = self._client.publish(self.topics.service_status(), "offline", 1, retain=True)
            await asyncio.to_thread(info.wait_for_publish, timeout_s)
            self._client.disconnect()
        await self._stop_loop()

    async def _stop_loop(self) -> None:
        await asyncio.to_thread(self._client.loop_stop)

    # -- messages ----------------------------------------------------------------------------

    def ack(self, items: Sequence[Delivery]) -> int:
        """Acknowledge QoS 1 deliveries of the current connection; return how many were sent.
        QoS 0 needs none; the others are left for the broker to redeliver."""
        sent = 0
        with self._lock:
            generation, connected = self.generation, self.connected
        if not connected:
            return 0
        mids = []
        for item in items:
            if item.qos > 0 and item.generation == generation:
                if item.qos == 1:
                    mids.append(item.mid)
                else:
                    self._client.ack(item.mid, item.qos)
                sent += 1
        self._client.ack_many(mids)
        return sent

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
        expiry_s: float | None = None,
        qos: int = 1,
    ) -> None:
        """Publish with QoS 1; paho keeps it in its queue across a reconnect (QoS 0: at most
        once, never sent again). With `expiry_s`, the broker discards the message if it
        cannot deliver it within that many seconds (MQTT 5 §3.3.2.3.3, Message Expiry
        Interval)."""
        properties = None
        if expiry_s is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = max(1, int(expiry_s))
        self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    # -- paho callbacks (network thread) -----------------------------------------------------

    def _handle_connect(
        self, client: paho.Client, _userdata: Any, _flags: Any, code: ReasonCode, _props: Any
    ) -> None:
        if not code.is_failure:
            with self._lock:
                self.generation += 1
                self.connected = True
            filters = [(topic, SubscribeOptions(qos=1)) for topic in self._subscriptions]
            filters += [(t, SubscribeOptions(qos=0, noLocal=True)) for t in self._copies]
            packets = [
                filters[start : start + FILTERS_PER_SUBSCRIBE]
                for start in range(0, len(filters), FILTERS_PER_SUBSCRIBE)
            ]
            with self._lock:
                self._subacks_due, self._refused = len(packets), False
            for packet in packets:
                client.subscribe(packet)
            if not packets:
                self.subscribed = True
            client.publish(self.topics.service_status(), "online", qos=1, retain=True)
        self._call_soon(self._resolve_connack, code)

    def _handle_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, code: ReasonCode, _props: Any
    ) -> None:
        with self._lock:
            self.connected = False
            self.subscribed = False
        if not self._closing:
            self.last_error = str(code)
        self._call_soon(self._lost.set)

    def _handle_subscribe(
        self, _client: paho.Client, _userdata: Any, _mid: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        refused = [str(code) for code in codes if code.is_failure]
        if refused:
            log.error("broker refused subscriptions %s: %s", self._subscriptions[:20], refused)
        with self._lock:
            self._subacks_due -= 1
            self._refused = self._refused or bool(refused)
            self.subscribed = self._subacks_due <= 0 and not self._refused

    def _handle_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", "replace")
        payload = msg.payload if isinstance(msg.payload, bytes) else bytes(msg.payload)
        self._on_message(topic, payload, Delivery(msg.mid, msg.qos, self.generation))

    def _handle_delivery(self, topic: str, payload: bytes, mid: int) -> None:
        # a device's QoS 1 PUBLISH, taken apart by the client itself (buffered.py)
        self._on_message(topic, payload, Delivery(mid, 1, self.generation))

    def _call_soon(self, callback: Callable[..., object], *args: object) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    def _resolve_connack(self, code: ReasonCode) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(code)
