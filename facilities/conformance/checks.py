"""The protocol's rules applied to what one device publishes, message by message (no I/O)."""

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from facilities.charging.payloads import PortState, StationEvent, StationTelemetry
from facilities.errors import UsageError
from facilities.garage.payloads import GarageTelemetry, GateEvent
from facilities.messages import Accepted, MessageKind, Rejected, RejectReason
from facilities.mqtt.commands import EXPIRES_MARGIN_S
from facilities.mqtt.decode import Decoder
from facilities.mqtt.topics import OWN_KINDS, Topics
from facilities.site import Site
from facilities.wire import Command, CommandAck, CommandAction, WireModel

# Six telemetry intervals: enough to see seq grow, the clock and a command's ack.
DEFAULT_SECONDS = 60.0
# A device synchronised by NTP is within a fraction of a second; commands carry `expires`
# 1 s after their last try (docs/protocol.md, "Commands"), so a clock 2 s off already makes a
# device refuse some of them as expired.
DEFAULT_MAX_SKEW_S = 2.0
_POWERED = frozenset({PortState.IDLE, PortState.CHARGING, PortState.FULL})
_TELEMETRY = frozenset({MessageKind.STATION_TELEMETRY, MessageKind.GARAGE_TELEMETRY})
_AVAILABILITY = frozenset({MessageKind.STATION_AVAILABILITY, MessageKind.GARAGE_AVAILABILITY})
_ACKS = frozenset({MessageKind.STATION_ACK, MessageKind.GATE_ACK})
_EXAMPLE_CHARS = 160


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
    "refused": Rule(True, "refused by the service"),
    "seq_backwards": Rule(True, "seq must grow by 1 per message on a topic (0 after a reboot)"),
    "seq_gap": Rule(True, "seq must grow by 1 per message: messages were skipped or lost"),
    "clock_skew": Rule(True, "ts must be the device's clock, synchronised (NTP)"),
    "qos": Rule(True, "publish with QoS 1 (QoS 0 is lost when the service is away)"),
    "availability_not_retained": Rule(True, "availability must be published retained"),
    "no_availability": Rule(True, "publish retained `online` after connecting, Will `offline`"),
    "telemetry_silence": Rule(True, "so long without telemetry, the service takes it offline"),
    "ack_late": Rule(True, "ack within the command timeout, or the service sends it again"),
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
    """The verdict on one watch: what was heard, each kind of deviation found, the command
    sent (`--send-command`)."""

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
        device: str,
        *,
        topics: Topics | None = None,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
        now: Callable[[], float] = time.time,
    ) -> None:
        found = site.stations.get(device) or site.garages.get(device)
        if found is None:
            raise UsageError(f"--device {device}: not a station or garage of the site file")
        self.site = site
        self.topics = topics = topics or Topics()
        self.device = device
        self.is_station = device in site.stations
        # the device's own thresholds (the site file may change them), as the service uses
        limits = found.thresholds
        self.ack_budget_s = limits.command_timeout_s  # later, the service sends it again
        # a command expires this long after it is first sent (facilities/mqtt/commands.py)
        self.ack_wait_s = limits.command_timeout_s * limits.command_tries + EXPIRES_MARGIN_S
        self.silence_s = limits.telemetry_interval_s * limits.offline_intervals
        self.max_skew_s = max_skew_s
        self.now = now
        self.started = now()
        self._decoder = Decoder(site, topics)
        own = topics.station if self.is_station else topics.garage
        self._rejected_topic = own(device, "rejected")
        self._lock = threading.Lock()
        self._found: dict[str, Found] = {}
        self._heard: dict[str, int] = {}
        self._last: dict[str, tuple[int, float]] = {}  # topic → (seq, ts)
        self._pending: dict[str, _Pending] = {}
        self._answered: set[str] = set()  # a copy heard after its ack waits for nothing
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
        """Messages heard so far, commands to the device included (a test waits on it)."""
        with self._lock:
            return sum(self._heard.values())

    def observe(self, topic: str, raw: bytes, *, qos: int, retain: bool) -> None:
        """Judge one message as the broker delivered it."""
        with self._lock:
            self._observe(topic, raw, qos=qos, retain=retain, now=self.now())

    def _note(self, kind: str, example: str) -> None:
        found = self._found.get(kind)
        if found is None:
            self._found[kind] = Found(1, example[:_EXAMPLE_CHARS])
        else:
            found.count += 1

    def _observe(self, topic: str, raw: bytes, *, qos: int, retain: bool, now: float) -> None:
        short = topic.removeprefix(f"{self.topics.prefix}/")
        if topic == self._rejected_topic:
            return  # the service telling the device what it refused: not the device's
        route = self.topics.parse(topic)
        what = "other" if route is None else route.kind.value.split("_", 1)[1]
        self._heard[what] = self._heard.get(what, 0) + 1
        if route is not None and route.kind in OWN_KINDS:
            self._command_heard(topic, raw, now)
            return
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
        if kind not in RULES:  # a reason of the service's that no rule above names
            kind, detail = "refused", f"{rejected.reason.value}: {detail}"
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
        if silent > self.silence_s:
            self._note(
                "telemetry_silence",
                f"{short}: nothing for {silent:.0f} s (offline after {self.silence_s:g} s)",
            )

    def _command_heard(self, topic: str, raw: bytes, now: float) -> None:
        try:
            command = Command.model_validate_json(raw)
        except ValidationError:
            return  # not the device's doing
        if command.id not in self._pending and command.id not in self._answered:
            expires = command.expires if command.expires is not None else now + self.ack_wait_s
            self._pending[command.id] = _Pending(topic, now, expires, ours=False)

    def _ack_heard(self, short: str, ack: CommandAck, now: float) -> None:
        pending = self._pending.pop(ack.id, None)
        if pending is None:
            if ack.id not in self._answered:  # else: the answer to a retry, repeated
                self._note("ack_unmatched", f"{short}: id {ack.id}")
            return
        self._answered.add(ack.id)
        took = now - pending.sent_at
        if took > self.ack_budget_s:
            self._note(
                "ack_late",
                f"{short}: id {ack.id} after {took:.1f} s (timeout {self.ack_budget_s:g} s)",
            )
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
            expires=now + self.ack_wait_s,
        )
        topic = self.topics.station(self.device, "command")
        assert command.expires is not None
        self._pending[command.id] = _Pending(topic, now, command.expires, ours=True)
        self.sent = (
            f"sent power_on of port {port} (reported {state}: it changes nothing)"
            " to test the ack path"
        )
        self.publish(topic, command.model_dump_json(exclude_none=True).encode(), self.ack_wait_s)

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
            return Report(
                device=self.device,
                seconds=now - self.started,
                heard=dict(self._heard),
                found=found,
                sent=self.sent,
            )


def _extra_names(payload: object) -> list[str]:
    """The fields of a payload that the protocol does not define, by path."""
    if not isinstance(payload, WireModel):
        return []
    names = list(payload.model_extra or {})
    if isinstance(payload, StationTelemetry):
        for reading in payload.ports:
            names += [f"ports[port {reading.port}].{name}" for name in reading.model_extra or {}]
    return names
