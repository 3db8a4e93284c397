"""Device messages once decoded: what they are, where from, or why they were refused."""

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from facilities.charging.payloads import StationEvent, StationTelemetry
from facilities.garage.payloads import GarageTelemetry, GateEvent
from facilities.wire import Availability, CommandAck

DevicePayload = StationTelemetry | StationEvent | GarageTelemetry | GateEvent | CommandAck


class MessageKind(StrEnum):
    STATION_TELEMETRY = "station_telemetry"
    STATION_EVENT = "station_event"
    STATION_AVAILABILITY = "station_availability"
    STATION_COMMAND = "station_command"
    STATION_ACK = "station_ack"
    STATION_REJECTED = "station_rejected"  # the service tells the station what it refused
    GARAGE_TELEMETRY = "garage_telemetry"
    GARAGE_AVAILABILITY = "garage_availability"
    GARAGE_REJECTED = "garage_rejected"  # ... and the garage controller, for its gates too
    GATE_EVENT = "gate_event"
    GATE_COMMAND = "gate_command"
    GATE_ACK = "gate_ack"


STATION_KINDS = frozenset(
    {
        MessageKind.STATION_TELEMETRY,
        MessageKind.STATION_EVENT,
        MessageKind.STATION_AVAILABILITY,
        MessageKind.STATION_COMMAND,
        MessageKind.STATION_ACK,
        MessageKind.STATION_REJECTED,
    }
)


@dataclass(frozen=True, slots=True)
class Route:
    """What a topic says: which kind of message, from which device (and gate)."""

    kind: MessageKind
    device: str
    gate: str | None = None


class RejectReason(StrEnum):
    MALFORMED_JSON = "malformed_json"
    SCHEMA_MISMATCH = "schema_mismatch"
    NON_FINITE_NUMBER = "non_finite_number"
    UNKNOWN_DEVICE = "unknown_device"
    UNKNOWN_TOPIC = "unknown_topic"
    TOO_LARGE = "too_large"
    UNKNOWN_PORT = "unknown_port"
    STORE_FAILED = "store_failed"


class Accepted(NamedTuple):
    """A valid message from a known device. A named tuple, not a frozen dataclass: one is made
    per message on paho's thread, and a frozen dataclass sets each field through
    `object.__setattr__` (three times the cost; docs/performance.md, "Tuples on the hot
    path")."""

    route: Route
    payload: DevicePayload | Availability
    received_at: float
    extra_fields: int = 0


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that goes to quarantine."""

    topic: str
    raw: bytes
    reason: RejectReason
    detail: str
    received_at: float
    # the site's device it came from; "" when the topic names none the site knows (all such
    # messages share one quarantine quota: docs/protocol.md, "What happens to bad input")
    device: str = ""
