"""What the soak's database holds after the run, next to what was sent and is expected."""

import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from facilities.rule_ids import RuleId

if TYPE_CHECKING:
    from simulators.fleet import Fleet

STORE_WAIT_S = 60.0  # the service drains what the broker queued while it was down


@dataclass
class Expected:
    """What the injected faults must produce."""

    alerts: Counter[tuple[RuleId, str]] = field(default_factory=Counter)  # (rule, subject): raises
    silent: set[str] = field(default_factory=set)  # devices that never ack a command
    # raised at most once without failing the run: a consequence of a fault, not its proof
    allowed: set[tuple[RuleId, str]] = field(default_factory=set)
    quarantined: int = 0

    def alert(self, rule: RuleId, subject: str) -> None:
        self.alerts[(rule, subject)] += 1


@dataclass
class Stored:
    """The database after the run, next to what the devices sent."""

    sent: dict[tuple[str, str], int]  # (table, device): messages the devices published
    stored: dict[tuple[str, str], int]
    quarantine: Counter[str]  # reason: rows
    commands: list[sqlite3.Row]
    raised: dict[tuple[str, str], tuple[str, int]]  # (rule, subject): (severity, raises)
    device_commands: int  # commands (tries included) the simulated devices received
    port_rows: tuple[int, int]  # port_samples: (rows expected from the ports sent, rows)


def _sent(fleet: "Fleet") -> dict[tuple[str, str], int]:
    sent = {}
    for sid, station in fleet.stations.items():
        sent[("station_samples", sid)] = station.model.seq_telemetry
        sent[("charging_events", sid)] = station.model.seq_event
    for gid, device in fleet.garages.items():
        sent[("garage_samples", gid)] = fleet.world.garages[gid].seq_telemetry
        sent[("gate_events", gid)] = sum(device.seq.values())
    return sent


def _read(db: Path, fleet: "Fleet") -> Stored:
    sent = _sent(fleet)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        stored: dict[tuple[str, str], int] = dict.fromkeys(sent, 0)
        for table, column in (
            ("station_samples", "station"),
            ("charging_events", "station"),
            ("garage_samples", "garage"),
            ("gate_events", "garage"),
        ):
            query = f"SELECT {column}, COUNT(*) FROM {table} GROUP BY {column}"  # noqa: S608
            for device, count in conn.execute(query):
                stored[(table, device)] = count
        quarantine = Counter(
            dict(conn.execute("SELECT reason, COUNT(*) FROM quarantine GROUP BY 1"))
        )
        commands = conn.execute("SELECT * FROM commands ORDER BY sent_at").fetchall()
        port_rows = conn.execute("SELECT COUNT(*) FROM port_samples").fetchone()[0]
        raised = {
            (rule, subject): (severity, count)
            for rule, subject, severity, count in conn.execute(
                "SELECT a.rule, a.subject, a.severity, COUNT(*) FROM alert_events e"
                " JOIN alerts a ON a.id = e.alert_id WHERE e.change = 'raised'"
                " GROUP BY a.rule, a.subject"
            )
        }
    finally:
        conn.close()
    received = sum(len(s.commands) for s in fleet.stations.values()) + sum(
        len(d.commands) for d in fleet.garages.values()
    )
    # the simulated stations report every port in every message
    ports = sum(s.model.seq_telemetry * len(s.model.ports) for s in fleet.stations.values())
    return Stored(sent, stored, quarantine, commands, raised, received, (ports, port_rows))


def wait_stored(db: Path, fleet: "Fleet", *, expected: Expected) -> Stored:
    """The database once it holds every message sent (or after STORE_WAIT_S)."""
    deadline = time.monotonic() + STORE_WAIT_S
    while True:
        result = _read(db, fleet)
        done = (
            result.stored == result.sent
            and result.port_rows[0] == result.port_rows[1]
            and sum(result.quarantine.values()) >= (expected.quarantined)
        )
        if done or time.monotonic() > deadline:
            return result
        time.sleep(1.0)
