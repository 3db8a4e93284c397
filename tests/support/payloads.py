"""What devices send, as JSON-ready dicts: the tests vary one field and keep the rest."""

import time
from typing import Any

Body = dict[str, Any]


def message(seq: int, *, ts: float | None = None, **fields: Any) -> Body:
    """Any device message: its sequence number and timestamp (now unless given)."""
    return {"seq": seq, "ts": time.time() if ts is None else ts, **fields}


def telemetry(
    seq: int, ports: list[Body] | None = None, *, ts: float | None = None, **fields: Any
) -> Body:
    """A station telemetry message as firmware writes it (no ports unless given)."""
    return {"seq": seq, "ts": time.time() if ts is None else ts, "ports": ports or [], **fields}


def port(n: int, state: str = "idle", **fields: Any) -> Body:
    """One port's reading: 220 V, and 180 W while charging (0 W otherwise) unless given."""
    power = fields.pop("power_w", 180.0 if state == "charging" else 0.0)
    return {"port": n, "state": state, "voltage_v": 220.0, "power_w": power, **fields}


def reading(n: int, state: str = "charging", **fields: Any) -> Body:
    """One port's reading with only the fields given besides its number and state."""
    return {"port": n, "state": state, **fields}


def powers(*watts: float) -> list[Body]:
    """Ports 1, 2, … charging at these powers."""
    return [reading(n, power_w=w) for n, w in enumerate(watts, 1)]


def event(seq: int, kind: str, *, ts: float | None = None, **fields: Any) -> Body:
    """A station or gate event (`plug_in`, `fault`, `entry`, `denied`, …)."""
    return message(seq, ts=ts, type=kind, **fields)


def ack(command_id: str, *, ok: bool = True, **fields: Any) -> Body:
    """A device's answer to the command `command_id`."""
    return {"id": command_id, "ok": ok, **fields}
