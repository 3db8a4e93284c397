"""A garage's traffic: bicycles in and out through its gates, following the day."""

import random
from dataclasses import dataclass, field

from facilities.garage.payloads import GarageTelemetry, GateEvent, GateEventType

# Share of bays taken by hour of day: full at night, emptiest mid-morning.
_OCCUPANCY_BY_HOUR = [0.9] * 6 + [
    0.8,
    0.6,
    0.45,
    0.4,
    0.4,
    0.42,
    0.45,
    0.45,
    0.45,
    0.5,
    0.55,
    0.65,
    0.75,
    0.82,
    0.86,
    0.88,
    0.9,
    0.9,
]
# Movements per hour at a garage of 100 bays, on top of the drift to the day's occupancy.
_CHURN_PER_HOUR = 12.0
_DENIED_SHARE = 0.03  # a stranger's or an expired card now and then


@dataclass(slots=True)
class GarageModel:
    garage: str
    capacity: int
    gates: tuple[str, ...]
    occupancy: int = 0
    seq_telemetry: int = 0
    seq_gate: dict[str, int] = field(default_factory=dict)
    pending: list[tuple[str, GateEventType, str | None]] = field(default_factory=list)
    smoke_left_s: float = 0.0  # the `garage-smoke` scenario: smoke for this long (seconds)

    @classmethod
    def new(cls, garage: str, capacity: int, gates: tuple[str, ...], hour: float) -> "GarageModel":
        target = _OCCUPANCY_BY_HOUR[int(hour) % 24]
        return cls(garage, capacity, gates, occupancy=int(capacity * target))

    def advance(
        self, dt_s: float, hour: float, rng: random.Random, *, device_dt_s: float | None = None
    ) -> None:
        # smoke lasts on the garage's own clock, the one the service times the alert on
        smoke_dt_s = dt_s if device_dt_s is None else device_dt_s
        self.smoke_left_s = max(0.0, self.smoke_left_s - smoke_dt_s)
        if not self.gates:
            return
        target = int(self.capacity * _OCCUPANCY_BY_HOUR[int(hour) % 24])
        scale = max(self.capacity, 1) / 100.0
        moves = rng.expovariate(1.0) * _CHURN_PER_HOUR * scale * dt_s / 3600.0
        drift = (target - self.occupancy) * min(1.0, dt_s / 1800.0)
        count = int(moves + abs(drift) + rng.random())
        for _ in range(count):
            gate = rng.choice(self.gates)
            if rng.random() < _DENIED_SHARE:
                self.pending.append((gate, GateEventType.DENIED, f"card:{rng.getrandbits(32):08X}"))
                continue
            entering = drift > 0 if rng.random() < 0.7 else rng.random() < 0.5
            if entering and self.occupancy >= self.capacity:
                entering = False
            if not entering and self.occupancy <= 0:
                entering = True
            credential = f"card:{rng.getrandbits(32):08X}"
            self.pending.append((gate, GateEventType.OPENED, None))
            kind = GateEventType.ENTRY if entering else GateEventType.EXIT
            self.pending.append((gate, kind, credential))
            self.pending.append((gate, GateEventType.CLOSED, None))
            self.occupancy += 1 if entering else -1

    def telemetry(self, ts: float, rng: random.Random) -> GarageTelemetry:
        message = GarageTelemetry(
            seq=self.seq_telemetry,
            ts=ts,
            occupancy=self.occupancy,
            temp_c=round(rng.uniform(22.0, 27.0), 1),
            smoke=self.smoke_left_s > 0,
        )
        self.seq_telemetry += 1
        return message

    def take_pending(self) -> list[tuple[str, GateEventType, str | None]]:
        """What happened at the gates since the last call: (gate, event type, credential)."""
        pending, self.pending = self.pending, []
        return pending

    def take_events(self, ts: float) -> list[tuple[str, GateEvent]]:
        events = []
        for gate, kind, credential in self.take_pending():
            seq = self.seq_gate.get(gate, 0)
            self.seq_gate[gate] = seq + 1
            events.append((gate, GateEvent(seq=seq, ts=ts, type=kind, credential=credential)))
        return events
