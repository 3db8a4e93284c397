"""`facilities conformance`: watch one device on the broker and list every way it departs from
the protocol (docs/protocol.md, "Conformance").

"Conformant" means "what the service accepts": every message goes through the service's own
decoder (facilities/mqtt/decode.py) and wire models, against the same site file. On top of
that come the protocol's rules the service does not refuse outright: seq order, clock skew,
QoS, retained flags, fields it ignores, how soon commands are acknowledged.
"""

import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TextIO

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import Field, ValidationError

from facilities.charging.payloads import PortState, StationEvent, StationTelemetry
from facilities.errors import BrokerAuthError, BrokerError, UsageError
from facilities.garage.payloads import GarageTelemetry, GateEvent
from facilities.messages import Accepted, MessageKind, Rejected, RejectReason
from facilities.mqtt.broker_url import BrokerUrl
from facilities.mqtt.decode import Decoder
from facilities.mqtt.link_options import AUTH_FAILURES, CONNACK_TIMEOUT_S, tls_context
from facilities.mqtt.topics import DEFAULT_PREFIX, OWN_KINDS, Topics
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
from facilities.wire import Command, CommandAck, CommandAction, WireModel

# Six telemetry intervals: enough to see seq grow, the clock and a command's ack.
DEFAULT_SECONDS = 60.0
# A device synchronised by NTP is within a fraction of a second; commands carry `expires`
# 1 s after their last try (docs/protocol.md, "Commands"), so a clock 2 s off already makes a
# device refuse some of them as expired.
DEFAULT_MAX_SKEW_S = 2.0
# The service's command timeout: an ack later than this makes it send the command again.
ACK_BUDGET_S = 5.0
# A command is tried 3 times, 5 s apart, and expires 1 s after the last try.
ACK_WAIT_S = ACK_BUDGET_S * 3 + 1.0
TELEMETRY_INTERVAL_S = 10.0
# The service takes a device for offline after 3 telemetry intervals of silence.
SILENCE_S = 3 * TELEMETRY_INTERVAL_S
_POWERED = frozenset({PortState.IDLE, PortState.CHARGING, PortState.FULL})
_TELEMETRY = frozenset({MessageKind.STATION_TELEMETRY, MessageKind.GARAGE_TELEMETRY})
_AVAILABILITY = frozenset({MessageKind.STATION_AVAILABILITY, MessageKind.GARAGE_AVAILABILITY})
_ACKS = frozenset({MessageKind.STATION_ACK, MessageKind.GATE_ACK})
_EXAMPLE_CHARS = 160


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


@dataclass(frozen=True, slots=True)
class Rule:
    """A kind of deviation: whether it fails the device, and what the protocol says."""

    fails: bool
    says: str


# Printed in this order. Refusals first: the service would not take those messages at all.
RULES: dict[str, Rule] = {
    "malformed_json": Rule(True, "refused by the service: not UTF-8 JSON"),
    "missing_field": Rule(True, "refused by the service: a required field is absent"),
    "schema_mismatch": Rule(True, "refused by the service: a field's type, range or value"),
    "non_finite_number": Rule(True, "refused by the service: NaN, Infinity or 1e999"),
    "too_large": Rule(True, "refused by the service: payload over 64 KiB"),
    "unknown_port": Rule(True, "refused by the service: port past the site file's count"),
    "unknown_topic": Rule(True, "refused by the service: not a protocol topic"),
    "seq_backwards": Rule(True, "seq must grow by 1 per message on a topic (0 after a reboot)"),
    "seq_gap": Rule(True, "seq must grow by 1 per message: messages were skipped or lost"),
    "clock_skew": Rule(True, "ts must be the device's clock, synchronised (NTP)"),
    "qos": Rule(True, "publish with QoS 1 (QoS 0 is lost when the service is away)"),
    "availability_not_retained": Rule(True, "availability must be published retained"),
    "no_availability": Rule(True, "publish retained `online` after connecting, Will `offline`"),
    "telemetry_silence": Rule(True, f"telemetry every 10 s; {SILENCE_S:.0f} s silent = offline"),
    "ack_late": Rule(True, f"ack within {ACK_BUDGET_S:.0f} s, or the service sends it again"),
    "ack_missing": Rule(True, "every command is answered on …/command/ack"),
    "ack_refused": Rule(True, "a harmless power_on of a powered port must be acked ok"),
    "extra_field": Rule(False, "not in the protocol: the service ignores it (a typo?)"),
    "retained": Rule(False, "only availability is retained; a retained message is replayed"),
    "seq_restart": Rule(False, "seq back to 0: a reboot (allowed)"),
    "ack_unmatched": Rule(False, "ack for a command sent before the watch began, or never"),
}


@dataclass(slots=True)
class Found:
    count: int
    first: str


@dataclass(slots=True)
class _Pending:
    """A command heard on (or sent to) the device's command topic, waiting for its ack."""

    topic: str
    sent_at: float
    expires: float
    ours: bool


@dataclass(slots=True)
class Report:
    device: str
    seconds: float
    heard: dict[str, int]
    found: dict[str, Found]
    sent: str | None

    @property
    def failures(self) -> list[str]:
        return [kind for kind in self.found if RULES[kind].fails]

    @property
    def passed(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        heard = ", ".join(f"{n} {what}" for what, n in sorted(self.heard.items())) or "nothing"
        out = [f"heard from {self.device} in {self.seconds:.0f} s: {heard}"]
        if self.sent:
            out.append(self.sent)
        for kind in RULES:
            if kind in self.found:
                found, rule = self.found[kind], RULES[kind]
                mark = "FAIL" if rule.fails else "warn"
                out.append(f"{mark} {kind} ×{found.count}: {rule.says}; first: {found.first}")
        warnings = len(self.found) - len(self.failures)
        noted = f", {warnings} kind(s) of warning" if warnings else ""
        if self.passed:
            out.append(f"PASS: {self.device} follows the protocol{noted}")
        else:
            out.append(
                f"FAIL: {self.device}: {len(self.failures)} kind(s) of deviation"
                f" ({sum(self.found[k].count for k in self.failures)} in all){noted}"
            )
        return out


class Watch:
    """What was heard from one device, judged message by message; thread-safe (paho calls
    `observe` on its own thread). `now` is this computer's clock (tests move it)."""

    def __init__(
        self,
        site: Site,
        topics: Topics,
        device: str,
        *,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
        now: Callable[[], float] = time.time,
    ) -> None:
        if device not in site.stations and device not in site.garages:
            raise UsageError(f"--device {device}: not a station or garage of the site file")
        self.site = site
        self.topics = topics
        self.device = device
        self.is_station = device in site.stations
        self.max_skew_s = max_skew_s
        self.now = now
        self.started = now()
        self._decoder = Decoder(site, topics)
        self._lock = threading.Lock()
        self._found: dict[str, Found] = {}
        self._heard: dict[str, int] = {}
        self._last: dict[str, tuple[int, float]] = {}  # topic → (seq, ts)
        self._pending: dict[str, _Pending] = {}
        self._last_telemetry = self.started
        self._availability_seen = False
        self.sent: str | None = None
        self.send_command = False
        self.publish: Callable[[str, bytes, float], None] | None = None  # the link's, to send

    def subscriptions(self) -> list[str]:
        if self.is_station:
            return [self.topics.station(self.device, "#")]
        return [self.topics.garage(self.device, "#")]

    def heard(self) -> int:
        """Messages heard so far (a test waits on it)."""
        with self._lock:
            return sum(self._heard.values())

    def observe(self, topic: str, raw: bytes, qos: int, retain: bool) -> None:
        with self._lock:
            self._observe(topic, raw, qos, retain, self.now())

    def _note(self, kind: str, example: str) -> None:
        found = self._found.get(kind)
        if found is None:
            self._found[kind] = Found(1, example[:_EXAMPLE_CHARS])
        else:
            found.count += 1

    def _observe(self, topic: str, raw: bytes, qos: int, retain: bool, now: float) -> None:
        short = topic.removeprefix(f"{self.topics.prefix}/")
        if topic.endswith("/rejected"):
            return  # the service telling the device what it refused: not the device's
        route = self.topics.parse(topic)
        if route is not None and route.kind in OWN_KINDS:
            self._command_heard(topic, raw, now)
            return
        what = "other" if route is None else route.kind.value.split("_", 1)[1]
        self._heard[what] = self._heard.get(what, 0) + 1
        decoded = self._decoder.decode(topic, raw, now)
        if qos == 0:
            self._note("qos", f"{short} at QoS 0")
        if isinstance(decoded, Rejected):
            self._rejected(short, decoded)
            return
        if decoded is None:
            return
        if decoded.route.kind in _AVAILABILITY:
            self._availability_seen = True
            if not retain:
                self._note("availability_not_retained", f"{short} {raw!r} not retained")
            return
        if retain:
            self._note("retained", f"{short} published retained")
        extra = _extra_names(decoded.payload)
        if extra:
            self._note("extra_field", f"{short}: {', '.join(extra[:5])}")
        if decoded.route.kind in _ACKS:
            assert isinstance(decoded.payload, CommandAck)
            self._ack_heard(short, decoded.payload, now)
            return
        if not retain:
            self._sequence(topic, short, decoded, now)
        if decoded.route.kind in _TELEMETRY:
            self._telemetry_gap(short, now)
            self._last_telemetry = now
            if isinstance(decoded.payload, StationTelemetry):
                self._maybe_send(decoded.payload, now)

    def _rejected(self, short: str, rejected: Rejected) -> None:
        kind = rejected.reason.value
        detail = rejected.detail
        if rejected.reason is RejectReason.SCHEMA_MISMATCH:
            missing = [part for part in detail.split("; ") if part.endswith("Field required")]
            if missing:
                kind, detail = "missing_field", "; ".join(missing)
        if kind not in RULES:  # unknown_device cannot happen: the topics are the device's
            kind = "schema_mismatch"
        self._note(kind, f"{short}: {detail}")

    def _sequence(self, topic: str, short: str, accepted: Accepted, now: float) -> None:
        payload = accepted.payload
        assert isinstance(payload, StationTelemetry | StationEvent | GarageTelemetry | GateEvent)
        seq, ts = payload.seq, payload.ts
        skew = now - ts
        if abs(skew) > self.max_skew_s:
            ahead = "behind" if skew > 0 else "ahead of"
            self._note("clock_skew", f"{short} ts {ts:.1f} is {abs(skew):.1f} s {ahead} ours")
        last = self._last.get(topic)
        self._last[topic] = (seq, ts)
        if last is None or last == (seq, ts):  # first heard, or a QoS 1 redelivery
            return
        if seq == 0 and last[0] != 0:
            self._note("seq_restart", f"{short} seq 0 after {last[0]}")
        elif seq <= last[0]:
            self._note("seq_backwards", f"{short} seq {seq} after {last[0]}")
        elif seq > last[0] + 1:
            self._note("seq_gap", f"{short} seq {seq} after {last[0]}")

    def _telemetry_gap(self, short: str, now: float) -> None:
        silent = now - self._last_telemetry
        if silent > SILENCE_S:
            self._note("telemetry_silence", f"{short}: nothing for {silent:.0f} s")

    def _command_heard(self, topic: str, raw: bytes, now: float) -> None:
        try:
            command = Command.model_validate_json(raw)
        except ValidationError:
            return  # not the device's doing
        if command.id not in self._pending:
            expires = command.expires if command.expires is not None else now + ACK_WAIT_S
            self._pending[command.id] = _Pending(topic, now, expires, ours=False)

    def _ack_heard(self, short: str, ack: CommandAck, now: float) -> None:
        pending = self._pending.pop(ack.id, None)
        if pending is None:
            self._note("ack_unmatched", f"{short}: id {ack.id}")
            return
        took = now - pending.sent_at
        if took > ACK_BUDGET_S:
            self._note("ack_late", f"{short}: id {ack.id} after {took:.1f} s")
        if pending.ours:
            answer = "ok" if ack.ok else f"ok=false ({ack.error})"
            self.sent = f"{self.sent}; answered {answer} in {took:.2f} s"
            if not ack.ok:
                self._note("ack_refused", f"{short}: id {ack.id}: {ack.error}")

    def _maybe_send(self, telemetry: StationTelemetry, now: float) -> None:
        """`--send-command`: power_on a port the station has just reported powered, which
        changes nothing (docs/protocol.md, "Conformance"); once."""
        if not self.send_command or self.sent is not None or self.publish is None:
            return
        powered = [reading for reading in telemetry.ports if reading.state in _POWERED]
        if not powered:
            return
        port, state = powered[0].port, powered[0].state.value
        command = Command(
            id=str(uuid.uuid4()),
            ts=now,
            action=CommandAction.POWER_ON,
            port=port,
            reason="conformance",
            expires=now + ACK_WAIT_S,
        )
        topic = self.topics.station(self.device, "command")
        assert command.expires is not None
        self._pending[command.id] = _Pending(topic, now, command.expires, ours=True)
        self.sent = (
            f"sent power_on of port {port} (reported {state}: it changes nothing)"
            " to test the ack path"
        )
        self.publish(topic, command.model_dump_json(exclude_none=True).encode(), ACK_WAIT_S)

    def waiting_until(self) -> float | None:
        """When the last command still waiting for its ack expires; None if none waits."""
        with self._lock:
            return max((p.expires for p in self._pending.values()), default=None)

    def report(self) -> Report:
        """The verdict as of now: commands past their expiry without an ack are missing."""
        with self._lock:
            now = self.now()
            for command_id, pending in list(self._pending.items()):
                if pending.expires <= now:
                    del self._pending[command_id]
                    short = pending.topic.removeprefix(f"{self.topics.prefix}/")
                    self._note("ack_missing", f"{short}: id {command_id}, none in time")
            self._telemetry_gap("telemetry", now)
            if not self._availability_seen:
                self._note("no_availability", "no …/availability heard, retained or live")
            if self.send_command and self.sent is None:
                self.sent = "no command sent: no telemetry reported a powered port"
            found = {kind: Found(f.count, f.first) for kind, f in self._found.items()}
            return Report(self.device, now - self.started, dict(self._heard), found, self.sent)


def _extra_names(payload: object) -> list[str]:
    """The fields of a payload that the protocol does not define, by path."""
    if not isinstance(payload, WireModel):
        return []
    names = list(payload.model_extra or {})
    if isinstance(payload, StationTelemetry):
        for reading in payload.ports:
            names += [f"ports[port {reading.port}].{name}" for name in reading.model_extra or {}]
    return names


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
        self.watch.observe(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain))

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
    watch = Watch(site, topics, device, max_skew_s=settings.max_skew_s)
    if send_command and not watch.is_station:
        raise UsageError(
            "--send-command: a garage's only command opens a gate, which is not harmless"
        )
    watch.send_command = send_command
    url = BrokerUrl.parse(settings.broker, ca_file=settings.broker_ca)
    link = Link(url, watch)
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
        try:
            time.sleep(settings.seconds)
            until = watch.waiting_until()
            while until is not None and time.time() < until:
                time.sleep(0.1)
                until = watch.waiting_until()
        except KeyboardInterrupt:  # Ctrl-C: the report of what was heard so far
            print("stopped early (Ctrl-C)", file=out)
    finally:
        link.close()
    report = watch.report()
    for line in report.lines():
        print(line, file=out)
    return report.passed
