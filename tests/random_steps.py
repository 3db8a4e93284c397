"""The random safety test's steps: what a seeded generator draws, printable and replayable."""

import random
from dataclasses import dataclass

from tests.random_devices import PORTS, STATIONS

# Step kinds and their weights. A SIGKILL and restart costs 1-2 s: at 4 in ~95 a run of 150
# steps has about 6.
WEIGHTS = {
    "telemetry": 16,
    "plug": 8,
    "hazard_on": 10,
    "hazard_off": 9,
    "fault": 3,
    "fault_cleared": 3,
    "garage_smoke": 2,
    "invalid": 5,
    "huge_seq": 1,
    "big_port": 2,
    "qos0": 2,
    "retained_qos0": 1,
    "duplicate": 4,
    "burst": 2,
    "late_burst": 2,
    "reorder": 2,
    "behaviour": 4,
    "staff_ack": 6,
    "staff_power_on": 5,
    "staff_power_off": 3,
    "kill": 4,
    "reboot": 2,
}
# `spike`: one sample over the port's limit (an inrush), not two in a row: no overload.
HAZARDS = ("port_hot", "overload", "spike", "rise", "cabinet_hot", "leakage", "smoke")
# Where a SIGKILL lands: right after the previous step's publishes were acknowledged by the
# broker, some milliseconds later (within the 50 ms ingest linger, a commit, an ack, a
# command's first try), or once the previous step settled.
KILL_POINTS = ("early:0", "early:20", "early:60", "early:150", "settled", "settled")
BEHAVIOURS = ("obey", "obey", "obey", "late:0.7", "late:1.3", "never", "refuse")


@dataclass(frozen=True, slots=True)
class Step:
    kind: str
    device: str = ""
    port: int = 0
    arg: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.device} {self.port} {self.arg or '-'}"

    @classmethod
    def parse(cls, text: str) -> "Step":
        """The step `str(step)` printed (a failure's trace, to replay it)."""
        kind, device, port, arg = text.split()
        return cls(kind, device, int(port), "" if arg == "-" else arg)


def parse_steps(text: str) -> list[Step]:
    """Steps separated by `;` or new lines, as a failure prints them."""
    return [Step.parse(line) for line in text.replace(";", "\n").splitlines() if line.strip()]


def generate(seed: int, count: int, kinds: list[str]) -> list[Step]:
    """`count` steps from `seed`: the same seed always gives the same steps."""
    rng = random.Random(seed)
    weights = [WEIGHTS[k] for k in kinds]
    steps = []
    for _ in range(count):
        kind = rng.choices(kinds, weights)[0]
        station, port = rng.choice(STATIONS), rng.randint(1, PORTS)
        arg = ""
        if kind in ("hazard_on", "hazard_off"):
            arg = rng.choice(HAZARDS)
        elif kind == "plug":
            arg = rng.choice(("in", "in", "out"))
        elif kind == "fault":
            arg = rng.choice(("over_current", "relay_error"))
        elif kind == "garage_smoke":
            arg = rng.choice(("on", "off"))
        elif kind == "invalid":
            arg = rng.choice(("malformed", "schema", "nan", "unknown"))
        elif kind == "behaviour":
            arg = rng.choice(BEHAVIOURS)
        elif kind == "duplicate":
            port = rng.randint(1, 3)
        elif kind == "burst":
            port = rng.choice((100, 600))  # 600: several ingest batches in flight
        elif kind == "staff_ack":
            port = rng.randint(1, 20)
        elif kind == "kill":
            arg = rng.choice(KILL_POINTS)
            port = rng.randint(0, 3)  # telemetry messages published while the service is down
        steps.append(Step(kind, station, port, arg))
    return steps
