"""Why a port may not be switched on now: the guards of docs/rules.md, "Desired state"."""

# One place says what holds a port off, for the power route (a 409 naming it) and for the
# staff console (`GET /api/cutoffs` lists it, so the console offers "Switch on" only when a
# power-on would be allowed). Pure: the caller reads the live state.

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

from facilities.alerts import Alert, AlertState
from facilities.rule_ids import RuleId
from facilities.verdicts import Severity


class Hold(StrEnum):
    """What keeps a port off."""

    UNACKNOWLEDGED = "unacknowledged"  # a critical alert of it nobody has looked at yet
    FIRING = "firing"  # a rule that cuts it still fires on the latest readings
    OFFLINE = "offline"  # its station is known offline: a command would act late


@dataclass(frozen=True, slots=True)
class Blocker:
    """One reason a power-on is refused now."""

    hold: Hold
    subject: str  # the alert's or the rule's subject; the station for `offline`
    rule: RuleId | None = None
    alert_id: str | None = None

    def __str__(self) -> str:
        return f"{self.rule} ({self.subject})" if self.rule else self.subject


def unacknowledged(
    alerts: Iterable[Alert], station: str, port: int, *, cut_by: Collection[str]
) -> list[Blocker]:
    """Critical alerts that nobody has acknowledged yet, of the port, of the whole station,
    or that cut the port (`cut_by`: the alerts of its cut-offs, such as the smoke of the
    garage the station stands in): a port a safety rule switched off stays off until a
    person has looked."""
    found = [
        Blocker(Hold.UNACKNOWLEDGED, a.subject, a.rule, a.id)
        for a in alerts
        if (a.subject in (station, f"{station}/{port}") or a.id in cut_by)
        and a.severity is Severity.CRITICAL
        and a.state is AlertState.ACTIVE
    ]
    return sorted(found, key=str)


def firing(cuts: Iterable[tuple[RuleId, str]]) -> list[Blocker]:
    """The rules (and their subjects) that would cut the port now."""
    return [Blocker(Hold.FIRING, subject, rule) for rule, subject in sorted(set(cuts))]


def offline(station: str) -> Blocker:
    """The station is known offline: its broker session would queue the command."""
    return Blocker(Hold.OFFLINE, station)
