"""The tool's options, its own MQTT 5 connection, and the run that prints the report."""

import contextlib
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, TextIO

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import Field

from facilities.conformance.checks import DEFAULT_MAX_SKEW_S, DEFAULT_SECONDS, Watch
from facilities.errors import BrokerAuthError, BrokerError, UsageError
from facilities.mqtt.broker_url import BrokerUrl
from facilities.mqtt.link_options import AUTH_FAILURES, CONNACK_TIMEOUT_S, tls_context
from facilities.mqtt.topics import DEFAULT_PREFIX, Topics
from facilities.options import Option, Options, as_text, positive
from facilities.settings import (
    BROKER_CA_HELP,
    DEFAULT_BROKER,
    DEFAULT_SITE,
    BrokerCa,
    BrokerUrlText,
    SitePath,
    TopicPrefix,
)
from facilities.site import SERVICE_USER, Site


class ConformanceSettings(Options):
    """`facilities conformance`: its options (`--device` and `--send-command` are arguments)."""

    site: SitePath = Field(as_text(DEFAULT_SITE), description="site file")
    broker: BrokerUrlText = Field(
        as_text(DEFAULT_BROKER),
        description="mqtt://user:password@host:port of a user that may read the device's"
        " topics (never the service's own user), or mqtts://…",
    )
    broker_ca: BrokerCa = Field("", description=BROKER_CA_HELP)
    topic_prefix: TopicPrefix = Field(DEFAULT_PREFIX, description="MQTT topic prefix")
    seconds: Annotated[float, Option("seconds", positive(float))] = Field(
        DEFAULT_SECONDS, gt=0, allow_inf_nan=False, description="how long to watch the device"
    )
    max_skew_s: Annotated[float, Option("max-skew", positive(float))] = Field(
        DEFAULT_MAX_SKEW_S,
        gt=0,
        allow_inf_nan=False,
        description="seconds the device clock (`ts`) may differ from this computer's",
    )


class Link:
    """The tool's own MQTT 5 connection: clean, subscribed at QoS 1 with the retain flag as
    published (so that a live availability shows whether it was retained)."""

    def __init__(self, url: BrokerUrl, watch: Watch) -> None:
        if url.username == SERVICE_USER:
            raise UsageError(
                f"--broker: not the service's own user {SERVICE_USER}: the broker gives a"
                " connection its user's client id, so this one would replace the running"
                " service's and discard its queue; use a user of its own that may read the"
                ' device\'s topics (docs/protocol.md, "Conformance")'
            )
        self.url = url
        self.watch = watch
        self._ready = threading.Event()
        self._code: ReasonCode | None = None
        self._suback = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=url.username or f"conformance-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if url.username:
            self._client.username_pw_set(url.username, url.password)
        context = tls_context(url)
        if context is not None:
            self._client.tls_set_context(context)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._suback.set()
        self._client.on_message = self._on_message
        watch.publish = self._publish

    def _on_connect(self, _c: paho.Client, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
        self._code = code
        self._ready.set()
        if code.is_failure:
            return
        # a clean session: after paho reconnects (a broker restart), subscribe again
        options = SubscribeOptions(qos=1, retainAsPublished=True)
        self._client.subscribe([(topic, options) for topic in self.watch.subscriptions()])

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self.watch.observe(msg.topic, bytes(msg.payload), qos=msg.qos, retain=bool(msg.retain))

    def _publish(self, topic: str, payload: bytes, expiry_s: float) -> None:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho
        properties.MessageExpiryInterval = int(expiry_s)
        self._client.publish(topic, payload, qos=1, properties=properties)

    def start(self) -> None:
        """Connect (clean start), subscribe, and wait for the SUBACK."""
        try:
            self._client.connect(self.url.host, self.url.port, keepalive=30, clean_start=True)
        except OSError as exc:
            raise BrokerError(f"cannot reach {self.url.display()}: {exc}") from None
        self._client.loop_start()
        if not self._ready.wait(CONNACK_TIMEOUT_S):
            self.close()
            raise BrokerError(f"no CONNACK from {self.url.display()}")
        if self._code is not None and self._code.is_failure:
            self.close()
            cls = BrokerAuthError if self._code.value in AUTH_FAILURES else BrokerError
            raise cls(f"broker {self.url.display()} refused the connection: {self._code}")
        if not self._suback.wait(CONNACK_TIMEOUT_S):
            self.close()
            raise BrokerError(f"no SUBACK from {self.url.display()}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def run_conformance(
    settings: ConformanceSettings,
    device: str,
    *,
    site: Site,
    send_command: bool = False,
    out: TextIO = sys.stdout,
) -> bool:
    """Watch `device` for `settings.seconds` (longer while a command awaits its ack), print
    the report; whether the device passed."""
    topics = Topics(settings.topic_prefix)
    watch = Watch(site, device, topics=topics, max_skew_s=settings.max_skew_s)
    if send_command and not watch.is_station:
        raise UsageError(
            "--send-command: a garage's only command opens a gate, which is not harmless"
        )
    watch.send_command = send_command
    url = BrokerUrl.parse(settings.broker, ca_file=settings.broker_ca)
    link = Link(url, watch)
    with _ctrl_c() as stopped:
        link.start()
        try:
            print(
                f"watching {device} on {url.display()} for {settings.seconds:.0f} s"
                f" (topics {', '.join(watch.subscriptions())})",
                file=out,
                flush=True,
            )
            if send_command:
                print(
                    "will send one power_on of a port the station reports powered (a no-op)"
                    " to test the ack path",
                    file=out,
                    flush=True,
                )
            interrupted = stopped.wait(settings.seconds)
            until = watch.waiting_until()
            while not interrupted and until is not None and time.time() < until:
                interrupted = stopped.wait(0.1)
                until = watch.waiting_until()
            if interrupted:  # Ctrl-C: the report of what was heard so far
                print("stopped early (Ctrl-C)", file=out)
        finally:
            link.close()
    report = watch.report()
    for line in report.lines():
        print(line, file=out)
    return report.passed


@contextlib.contextmanager
def _ctrl_c() -> Iterator[threading.Event]:
    """An event set by Ctrl-C (SIGINT) while the watch runs, instead of a KeyboardInterrupt
    that could land anywhere (in a print, in closing the link) and leave the report unprinted.
    Only the main thread may set a signal handler: elsewhere (a caller's thread) the event is
    never set, and the watch runs its time."""
    stopped = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stopped
        return
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: stopped.set())
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGINT, previous)
