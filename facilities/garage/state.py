"""Live state of a garage and its gates, updated from telemetry and gate events."""

import bisect
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from facilities.garage.payloads import GarageTelemetry, GateEvent, GateEventType

DENIED_HISTORY = timedelta(minutes=10)


@dataclass(slots=True)
class GateLive:
    gate: str
    open: bool | None = None
    since: datetime | None = None  # when it last opened or closed
    last_event: GateEventType | None = None
    last_event_at: datetime | None = None
    # refusals of the last DENIED_HISTORY, in time order on the clock windows use (the
    # device's when trusted: docs/rules.md, "Device time"), and when the newest was received
    denied: deque[datetime] = field(default_factory=deque)
    denied_seen_at: datetime | None = None
    forced_at: datetime | None = None


@dataclass(slots=True)
class GarageLive:
    garage: str
    gates: dict[str, GateLive] = field(default_factory=dict)
    online: bool | None = None
    last_seen: datetime | None = None
    occupancy: int | None = None
    temp_c: float | None = None
    smoke: bool | None = None
    clock_skew_s: float | None = None

    @classmethod
    def new(cls, garage: str, gates: tuple[str, ...]) -> "GarageLive":
        return cls(garage, {gate: GateLive(gate) for gate in gates})


def apply_telemetry(live: GarageLive, message: GarageTelemetry, at: datetime) -> None:
    live.last_seen = at
    live.online = True
    live.clock_skew_s = message.ts - at.timestamp()
    if message.occupancy is not None:
        live.occupancy = message.occupancy
    if message.temp_c is not None:
        live.temp_c = message.temp_c
    if message.smoke is not None:
        live.smoke = message.smoke


def apply_gate_event(
    live: GarageLive,
    gate_id: str,
    message: GateEvent,
    at: datetime,
    *,
    device_at: datetime | None = None,
) -> None:
    """Fold one gate event, received `at`, into the live state; `device_at`: its own time
    when the device's clock can be trusted (refusals are counted in windows on it)."""
    live.last_seen = at
    gate = live.gates.setdefault(gate_id, GateLive(gate_id))
    gate.last_event, gate.last_event_at = message.type, at
    if message.type in (GateEventType.OPENED, GateEventType.FORCED_OPEN):
        if not gate.open:
            gate.open, gate.since = True, at
        if message.type is GateEventType.FORCED_OPEN:
            gate.forced_at = at
    elif message.type is GateEventType.CLOSED:
        gate.open, gate.since = False, at
    elif message.type is GateEventType.DENIED:
        when = device_at or at
        if gate.denied and gate.denied[-1] - when > DENIED_HISTORY:
            return  # older than any window: stored, does not act
        gate.denied.insert(bisect.bisect_right(gate.denied, when), when)
        gate.denied_seen_at = at
        while gate.denied[-1] - gate.denied[0] > DENIED_HISTORY:
            gate.denied.popleft()


def apply_availability(live: GarageLive, online: bool, at: datetime) -> None:
    live.online = online
    if online:  # a replayed change (at start) never takes the last message back in time
        live.last_seen = max(live.last_seen or at, at)
