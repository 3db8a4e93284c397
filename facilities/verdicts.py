"""What a rule says about one subject at one moment, and what it asks to be done."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from facilities.rule_ids import RuleId
from facilities.thresholds import Thresholds


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class ActionKind(StrEnum):
    POWER_OFF_PORT = "power_off_port"
    POWER_OFF_STATION = "power_off_station"
    OPEN_GATE = "open_gate"


@dataclass(frozen=True, slots=True)
class Action:
    """A command a rule asks for: power a port or a station off, open a gate."""

    kind: ActionKind
    device: str  # station or garage id
    port: int | None = None
    gate: str | None = None


class Verdict(NamedTuple):
    """A rule's reading of one subject (`cs-07`, `cs-07/3`, `g-hc3`, `g-hc3/north`).

    `firing`: the condition holds now. `clearable`: it is far enough from the limit (below
    the hysteresis band) for an open alert to start counting down to cleared. A verdict that
    neither fires nor is clearable holds an open alert as it is. (A named tuple: rules make
    dozens per message, and a tuple is the cheapest immutable value to make.)
    """

    rule: RuleId
    subject: str
    firing: bool
    severity: Severity = Severity.WARNING
    clearable: bool = True
    value: float | None = None
    actions: tuple[Action, ...] = ()


def over(
    rule: RuleId,
    subject: str,
    value: float | None,
    limit: float,
    *,
    severity: Severity,
    hysteresis: float,
    actions: tuple[Action, ...] = (),
    inclusive: bool = True,
) -> list[Verdict]:
    """A numeric threshold: fires at (or above) `limit`; held open down to `hysteresis` ×
    limit; below that (or without a value) nothing is reported: clear."""
    if value is None or value < hysteresis * limit:
        return []
    firing = value >= limit if inclusive else value > limit
    return [
        Verdict(
            rule,
            subject,
            firing,
            severity,
            clearable=False,
            value=value,
            actions=actions if firing else (),
        )
    ]


def device_offline(
    device: str, online: bool | None, last_seen: datetime | None, t: Thresholds, now: datetime
) -> list[Verdict]:
    """`offline` for any device: its Will said so, or nothing for `offline_intervals`
    telemetry intervals (on the server's clock)."""
    silent_s = (now - last_seen).total_seconds() if last_seen else None
    stale = silent_s is not None and silent_s >= t.telemetry_interval_s * t.offline_intervals
    if online is False or stale:
        return [Verdict(RuleId.OFFLINE, device, True, Severity.WARNING, value=silent_s)]
    return []


def device_clock_skew(device: str, skew_s: float | None, t: Thresholds) -> list[Verdict]:
    """`clock_skew` for any device: its clock more than `clock_skew_s` off the server's."""
    if skew_s is None or abs(skew_s) <= t.clock_skew_s:
        return []
    return [Verdict(RuleId.CLOCK_SKEW, device, True, Severity.INFO, value=skew_s)]
