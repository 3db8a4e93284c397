"""The alert lifecycle: one open alert per (rule, subject); active → acknowledged → cleared."""

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from uuid import uuid4

from facilities.rule_ids import RuleId
from facilities.verdicts import Action, Severity, Verdict

_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class AlertState(StrEnum):
    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class Change(StrEnum):
    RAISED = "raised"
    UPDATED = "updated"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


@dataclass(frozen=True, slots=True)
class Alert:
    rule: RuleId
    subject: str
    severity: Severity
    state: AlertState
    raised_at: datetime
    updated_at: datetime
    value: float | None = None
    peak: float | None = None
    count: int = 1
    clear_since: datetime | None = None  # condition false (below hysteresis) since
    cleared_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    id: str = field(default_factory=lambda: uuid4().hex)

    @property
    def key(self) -> tuple[RuleId, str]:
        return (self.rule, self.subject)

    @property
    def device(self) -> str:
        return device_of(self.subject)

    @property
    def open(self) -> bool:
        return self.state is not AlertState.CLEARED


@dataclass(frozen=True, slots=True)
class Transition:
    """What happened to an alert, and the actions to take because of it."""

    change: Change
    alert: Alert
    actions: tuple[Action, ...] = ()
    # The device message that caused it (`message_cause`); None: the server's clock (a
    # timer, silence) or a person.
    cause: str | None = None


def device_of(subject: str) -> str:
    """The device an alert's subject belongs to (`cs-07/3` → `cs-07`)."""
    return subject.split("/", 1)[0]


def hazards(alerts: Iterable[Alert]) -> frozenset[str]:
    """Subjects of open critical alerts (`cs-07`, `cs-07/3`): no port of theirs is free."""
    return frozenset(a.subject for a in alerts if a.severity is Severity.CRITICAL and a.open)


def _peak(peak: float | None, value: float | None) -> float | None:
    if value is None:
        return peak
    return value if peak is None else max(peak, value)


def judge(
    alert: Alert | None,
    verdict: Verdict,
    now: datetime,
    *,
    clear_after_s: float,
    evidence: bool,
) -> Transition | None:
    """The next step of one (rule, subject) given a fresh verdict. `evidence`: the verdict
    comes from a new message (counted), not from a clock tick."""
    if verdict.firing:
        return _firing(alert, verdict, now, evidence=evidence)
    if alert is None or not alert.open:
        return None
    return _calm(alert, verdict, now, clear_after_s=clear_after_s)


def _firing(
    alert: Alert | None, verdict: Verdict, now: datetime, *, evidence: bool
) -> Transition | None:
    """The condition holds: raise, escalate, or update (on evidence, or to stop clearing)."""
    if alert is None or not alert.open:
        raised = Alert(
            verdict.rule,
            verdict.subject,
            verdict.severity,
            AlertState.ACTIVE,
            raised_at=now,
            updated_at=now,
            value=verdict.value,
            peak=verdict.value,
        )
        return Transition(Change.RAISED, raised, verdict.actions)
    escalated = _RANK[verdict.severity] > _RANK[alert.severity]
    if not (evidence or escalated or alert.clear_since is not None):
        return None
    updated = replace(
        alert,
        severity=verdict.severity if escalated else alert.severity,
        state=AlertState.ACTIVE if escalated else alert.state,
        updated_at=now,
        value=verdict.value,
        peak=_peak(alert.peak, verdict.value),
        count=alert.count + (1 if evidence else 0),
        clear_since=None,
    )
    if escalated:
        return Transition(Change.ESCALATED, updated, verdict.actions)
    return Transition(Change.UPDATED, updated)


def _calm(
    alert: Alert, verdict: Verdict, now: datetime, *, clear_after_s: float
) -> Transition | None:
    """The condition does not hold for an open alert: held within the hysteresis band, else
    counting down to cleared (`clear_after_s`)."""
    if not verdict.clearable:
        if alert.clear_since is None:
            return None
        return Transition(Change.UPDATED, replace(alert, clear_since=None, value=verdict.value))
    value = verdict.value if verdict.value is not None else alert.value
    if alert.clear_since is None:
        return Transition(Change.UPDATED, replace(alert, clear_since=now, value=value))
    if (now - alert.clear_since).total_seconds() >= clear_after_s:
        cleared = replace(
            alert, state=AlertState.CLEARED, cleared_at=now, updated_at=now, value=value
        )
        return Transition(Change.CLEARED, cleared)
    return None


def reopen(alert: Alert, now: datetime) -> Transition:
    """The condition of an acknowledged alert happened again as a new fact (a command that
    failed again): back to `active`, published like an escalation, so that a person sees it
    and what it blocks is blocked again. The acknowledgement stays in the alert's history."""
    reopened = replace(
        alert,
        state=AlertState.ACTIVE,
        updated_at=now,
        count=alert.count + 1,
        clear_since=None,
        acknowledged_by=None,
        acknowledged_at=None,
    )
    return Transition(Change.ESCALATED, reopened)


def acknowledge(alert: Alert, who: str, now: datetime) -> Transition | None:
    """Staff acknowledge an active alert (who and when are kept)."""
    if alert.state is not AlertState.ACTIVE:
        return None
    acked = replace(
        alert,
        state=AlertState.ACKNOWLEDGED,
        acknowledged_by=who,
        acknowledged_at=now,
        updated_at=now,
    )
    return Transition(Change.ACKNOWLEDGED, acked)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat().replace("+00:00", "Z") if when else None


def alert_payload(transition: Transition) -> dict[str, object]:
    """The JSON of an alert as published on `facilities/alerts/…`."""
    a = transition.alert
    return {
        "id": a.id,
        "rule": a.rule,
        "subject": a.subject,
        "severity": a.severity.value,
        "state": a.state.value,
        "change": transition.change.value,
        "raised_at": _iso(a.raised_at),
        "updated_at": _iso(a.updated_at),
        "cleared_at": _iso(a.cleared_at),
        "value": a.value,
        "peak": a.peak,
        "count": a.count,
        "acknowledged_by": a.acknowledged_by,
        "acknowledged_at": _iso(a.acknowledged_at),
        "actions": [
            {"action": act.kind.value, "device": act.device, "port": act.port, "gate": act.gate}
            for act in transition.actions
        ],
    }
