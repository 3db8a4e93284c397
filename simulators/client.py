"""One device's MQTT connection: its own id and credentials, Last Will, QoS 1 publishing."""

import ssl
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel

from facilities.errors import BrokerAuthError, BrokerError, BrokerTlsError
from facilities.mqtt.broker_url import BrokerUrl
from facilities.mqtt.link_options import tls_context, untrusted

# paho's message ids wrap at 65,535: keep far fewer QoS 1 publishes outstanding, or messages
# are lost silently (seen on this kind of machine).
MAX_OUTSTANDING = 1000
CONNECT_TIMEOUT_S = 10.0


class DeviceClient:
    """A station, garage controller or gate: publishes as itself, like the real thing."""

    def __init__(
        self,
        url: BrokerUrl,
        *,
        client_id: str,
        availability_topic: str | None = None,
    ) -> None:
        self.url = url
        self.client_id = client_id
        self._connected = threading.Event()
        self._connect_code: ReasonCode | None = None
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=True,
        )
        if url.username:
            self._client.username_pw_set(url.username, url.password)
        context = tls_context(url)  # mqtts://: a device checks the broker's certificate too
        if context is not None:
            self._client.tls_set_context(context)
        self._client.max_inflight_messages_set(MAX_OUTSTANDING)
        self._client.max_queued_messages_set(0)
        self.availability_topic = availability_topic
        if availability_topic:
            self._client.will_set(availability_topic, "offline", qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._subacked: dict[int, threading.Event] = {}
        self._topics: list[str] = []
        self._subacked_lock = threading.Lock()

    def _on_connect(self, _c: paho.Client, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
        self._connect_code = code
        self._connected.set()
        if code.is_failure:
            return
        if self.availability_topic:
            self._client.publish(self.availability_topic, "online", qos=1, retain=True)
        # A clean session forgets subscriptions: after paho reconnects (a broker restart),
        # subscribe again or the device never hears another command.
        for topic in self._topics:
            self._client.subscribe(topic, qos=1)

    def connect(self) -> "DeviceClient":
        """Connect and wait for the CONNACK; raise BrokerError when refused."""
        try:
            self._client.connect(self.url.host, self.url.port, keepalive=30)
        except ssl.SSLCertVerificationError as exc:
            raise BrokerTlsError(f"{self.client_id}: {untrusted(self.url, exc)}") from None
        except OSError as exc:
            raise BrokerError(
                f"{self.client_id}: cannot reach {self.url.display()}: {exc}"
            ) from None
        self._client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT_S):
            self.close()
            raise BrokerError(f"{self.client_id}: no CONNACK from {self.url.display()}")
        code = self._connect_code
        if code is not None and code.is_failure:
            self.close()
            cls = BrokerAuthError if code.value in (134, 135) else BrokerError
            raise cls(f"{self.client_id}: broker refused the connection: {code}")
        return self

    def connected(self) -> bool:
        """Whether the connection is up now (paho reconnects on its own after a loss)."""
        return self._client.is_connected()

    def publish_raw(
        self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False
    ) -> paho.MQTTMessageInfo:
        """Publish bytes as they are (tests use this to send garbage, as a broken device would)."""
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    def publish(self, topic: str, payload: BaseModel) -> paho.MQTTMessageInfo:
        """Publish a wire model as JSON, QoS 1."""
        return self.publish_raw(topic, payload.model_dump_json(exclude_none=True))

    def subscribe(
        self, topic: str, callback: Any, *, timeout_s: float = 5.0, retained: bool = True
    ) -> None:
        """Subscribe with QoS 1 and wait for the SUBACK; `callback(topic, payload)` runs on
        paho's thread. `retained=False`: not the messages the broker kept from before."""

        def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
            if retained or not msg.retain:
                callback(msg.topic, bytes(msg.payload))

        self._client.message_callback_add(topic, on_message)
        self._topics.append(topic)
        _rc, mid = self._client.subscribe(topic, qos=1)
        if mid is None:
            raise BrokerError(f"{self.client_id}: cannot subscribe to {topic}: not connected")
        with self._subacked_lock:
            done = self._subacked.setdefault(mid, threading.Event())
        if not done.wait(timeout_s):
            raise BrokerError(f"{self.client_id}: no SUBACK for {topic} in {timeout_s} s")

    def _on_subscribe(self, _c: paho.Client, _u: Any, mid: int, _codes: Any, _p: Any) -> None:
        with self._subacked_lock:
            self._subacked.setdefault(mid, threading.Event()).set()

    def close(self, *, clean: bool = True) -> None:
        """Disconnect; with `clean`, say `offline` first (a dead device leaves it to its Will)."""
        if clean and self.availability_topic and self._client.is_connected():
            self._client.publish(self.availability_topic, "offline", qos=1, retain=True)
        self._client.disconnect()
        self._client.loop_stop()
