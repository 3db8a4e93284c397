"""Topic + payload bytes → an accepted message or a rejection with its reason. No I/O."""

from typing import NamedTuple

from pydantic import ValidationError

from facilities.charging.payloads import StationEvent, StationTelemetry
from facilities.garage.payloads import GarageTelemetry, GateEvent
from facilities.messages import (
    STATION_KINDS,
    Accepted,
    DevicePayload,
    MessageKind,
    Rejected,
    RejectReason,
    Route,
)
from facilities.mqtt.topics import OWN_KINDS, Topics
from facilities.site import Site
from facilities.wire import MAX_PAYLOAD_BYTES, Availability, CommandAck, WireModel

_MODELS: dict[MessageKind, type[WireModel]] = {
    MessageKind.STATION_TELEMETRY: StationTelemetry,
    MessageKind.STATION_EVENT: StationEvent,
    MessageKind.STATION_ACK: CommandAck,
    MessageKind.GARAGE_TELEMETRY: GarageTelemetry,
    MessageKind.GATE_EVENT: GateEvent,
    MessageKind.GATE_ACK: CommandAck,
}
_AVAILABILITY_KINDS = frozenset({MessageKind.STATION_AVAILABILITY, MessageKind.GARAGE_AVAILABILITY})
_DETAIL_CHARS = 300  # enough for the first few validation errors, short enough to log


class _Plan(NamedTuple):
    """What a known device's topic decodes to, worked out on its first message: a topic
    names its device and kind, and the site does not change while the service runs."""

    route: Route
    model: type[WireModel] | None  # None: availability, `online` or `offline`
    ports: int  # a station's port count (a port past it is refused); 0 for a garage


class Decoder:
    """Decodes what the broker delivers, against the site's devices."""

    def __init__(self, site: Site, topics: Topics) -> None:
        self._site = site
        self._topics = topics
        # Per topic of a device in the site, at most a few per device: the topic's parse and
        # the site's lookups are made once, not for every message (docs/performance.md,
        # "Each topic worked out once"). Unknown topics and devices are never kept.
        self._plans: dict[str, _Plan] = {}

    @property
    def topics(self) -> Topics:
        """The topics it decodes: those the service answers on, too."""
        return self._topics

    @property
    def topics_known(self) -> int:
        """Device topics worked out so far (at most a few per device of the site)."""
        return len(self._plans)

    def decode(self, topic: str, raw: bytes, received_at: float) -> Accepted | Rejected | None:
        """Accepted or Rejected; None for the service's own commands heard back."""
        plan = self._plans.get(topic)
        if plan is None:
            found = self._plan(topic, raw, received_at)
            if not isinstance(found, _Plan):
                return found
            plan = found
        route, model = plan.route, plan.model
        if len(raw) > MAX_PAYLOAD_BYTES:
            return Rejected(
                topic,
                raw,
                RejectReason.TOO_LARGE,
                f"{len(raw)} bytes > {MAX_PAYLOAD_BYTES}",
                received_at,
                route.device,
            )
        if model is None:
            try:
                return Accepted(route, Availability(raw.decode("ascii")), received_at)
            except (UnicodeDecodeError, ValueError):
                return Rejected(
                    topic,
                    raw,
                    RejectReason.SCHEMA_MISMATCH,
                    "availability must be `online` or `offline`",
                    received_at,
                    route.device,
                )
        try:
            payload = model.model_validate_json(raw)
        except ValidationError as exc:
            reason, detail = _classify(exc)
            return Rejected(topic, raw, reason, detail, received_at, route.device)
        assert isinstance(payload, DevicePayload)  # _MODELS only holds device payload models
        refused = _refused_ports(payload, plan.ports, route.device)
        if refused is not None:
            return Rejected(topic, raw, *refused, received_at, route.device)
        return Accepted(route, payload, received_at, payload.extra_field_count())

    def _plan(self, topic: str, raw: bytes, received_at: float) -> _Plan | Rejected | None:
        """The plan of a topic heard for the first time, kept when it names a device of the
        site; else why it is refused, or None for the service's own commands."""
        route = self._topics.parse(topic)
        if route is None:
            return Rejected(
                topic, raw, RejectReason.UNKNOWN_TOPIC, "not a protocol topic", received_at
            )
        if route.kind in OWN_KINDS:
            return None
        if not self._known(route):
            return Rejected(
                topic,
                raw,
                RejectReason.UNKNOWN_DEVICE,
                f"{route.device} is not in the site file",
                received_at,
            )
        ports = self._site.stations[route.device].ports if route.kind in STATION_KINDS else 0
        model = None if route.kind in _AVAILABILITY_KINDS else _MODELS[route.kind]
        plan = self._plans[topic] = _Plan(route, model, ports)
        return plan

    def _known(self, route: Route) -> bool:
        if route.kind in STATION_KINDS:
            return route.device in self._site.stations
        if route.gate is not None:
            return self._site.has_gate(route.device, route.gate)
        return route.device in self._site.garages


def _refused_ports(
    payload: DevicePayload, count: int, device: str
) -> tuple[RejectReason, str] | None:
    """Why a message's ports are refused, or None. A telemetry message lists each port at
    most once (two readings of one port: the rules would judge one and the store keep the
    other), and no port past the station's port count: the live state keeps one entry per
    port it hears of, so an unknown port must never reach it (docs/protocol.md)."""
    if isinstance(payload, StationTelemetry):
        ports = [reading.port for reading in payload.ports]
        if len(set(ports)) != len(ports):
            return RejectReason.SCHEMA_MISMATCH, "ports: a port is listed more than once"
    elif isinstance(payload, StationEvent) and payload.port is not None:
        ports = [payload.port]
    else:
        return None
    if not ports or max(ports) <= count:
        return None  # every message of a well-configured site
    beyond = sorted({port for port in ports if port > count})
    listed = ", ".join(str(port) for port in beyond[:5])
    return RejectReason.UNKNOWN_PORT, f"port {listed}: {device} has {count} ports"


def _classify(exc: ValidationError) -> tuple[RejectReason, str]:
    errors = exc.errors(include_url=False, include_input=False)
    types = {error["type"] for error in errors}
    if "json_invalid" in types or "json_type" in types:
        reason = RejectReason.MALFORMED_JSON
    elif "finite_number" in types:
        reason = RejectReason.NON_FINITE_NUMBER
    else:
        reason = RejectReason.SCHEMA_MISMATCH
    detail = "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or '(payload)'}: {error['msg']}"
        for error in errors
    )
    return reason, detail[:_DETAIL_CHARS]
