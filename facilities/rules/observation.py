"""What one message caused (`Observation`) and which message it was (`message_cause`)."""

# Also what a resident sees of a device (a change of it is told), and when a device's own
# clock may be believed.

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from facilities.alerts import Alert, Transition
from facilities.charging import live as charging
from facilities.charging.payloads import StationTelemetry
from facilities.garage import state as garage
from facilities.messages import Accepted
from facilities.verdicts import Action
from facilities.wire import Availability, CommandAck


def message_cause(message: Accepted) -> str:
    """Which device message this is, for the audit of what it caused: its kind, the device
    (and gate) of its topic, and its identity (`seq`, `ts`) as stored, e.g.
    `garage_telemetry g-hc3 seq 41 ts 1764400301.000`. Nothing is taken from the payload but
    those two numbers: the device is the topic's, which the broker's ACL ties to its user."""
    route, payload = message.route, message.payload
    source = f"{route.device}/{route.gate}" if route.gate is not None else route.device
    if isinstance(payload, Availability):
        return f"{route.kind} {source} {payload.value} received {message.received_at:.3f}"
    if isinstance(payload, CommandAck):
        return f"{route.kind} {source} id {payload.id}"
    return f"{route.kind} {source} seq {payload.seq} ts {payload.ts:.3f}"


class Resend(NamedTuple):
    """A cut-off asserted again, the alert that wants it, and the message that made it due."""

    action: Action
    alert: Alert
    cause: str | None = None


@dataclass(slots=True)
class Observation:
    """What one message caused: alert transitions (with actions), finished sessions, and
    whether the device's visible state (port states, online, occupancy, gates) changed."""

    transitions: list[Transition] = field(default_factory=list)
    sessions: list[charging.Session] = field(default_factory=list)
    changed: str | None = None  # the device, when its visible state changed
    # Cut-offs asserted again (the device contradicted one, or is back): docs/rules.md,
    # "Desired state". First cuts ride on their transitions' actions.
    resends: list[Resend] = field(default_factory=list)


def device_time(ts: float, received_at: float, skew_s: float) -> datetime | None:
    """A message's own time, when the device's clock is within `skew_s` of the server's (it
    then judges windows and the order of samples); None when it cannot be trusted."""
    return datetime.fromtimestamp(ts, UTC) if abs(ts - received_at) <= skew_s else None


def station_look(live: charging.StationLive) -> tuple[object, ...]:
    """What a resident sees of a station: online, faults, each port's state."""
    ports = tuple([(n, p.state, p.fault_code, p.since is None) for n, p in live.ports.items()])
    return live.online, live.fault_code, ports


def looks_the_same_after(live: charging.StationLive, payload: StationTelemetry) -> bool:
    """Whether `station_look` is sure to be the same after this telemetry message: the
    station is online and every port it reports is known, has a state, and is in the state
    reported (telemetry sets no fault and touches no other port). The common case, told
    without building the look of every port twice (docs/performance.md, "Tuples on the hot
    path")."""
    if not live.online:
        return False
    got = live.ports.get
    for reading in payload.ports:
        port = got(reading.port)
        if port is None or port.since is None or port.state is not reading.state:
            return False
    return True


def garage_look(live: garage.GarageLive) -> tuple[object, ...]:
    """What a resident sees of a garage: online, occupancy, smoke, each gate."""
    gates = tuple((g, gate.open, gate.last_event_at) for g, gate in live.gates.items())
    return live.online, live.occupancy, live.smoke, gates
