"""Requests refused for want of a valid token, and a token holder's refusals past the first
few a minute: counted per minute in memory, stored in batches."""

# A flood of bogus requests must cost memory and a few rows, not a commit each
# (docs/api.md, "Refusals"). Pure: the service's task writes what `take` returns.

from collections.abc import Callable
from dataclasses import dataclass

from facilities.metrics import ApiMetrics

# Refusals are grouped by the minute they happened in.
MINUTE_S = 60.0
# Groups (minute, client, route, outcome) held between two writes. An attacker rotating
# addresses (IPv6 gives many) fills this and the rest are counted under OTHERS: memory and
# rows stay bounded, and the count stays right. 1,000 groups are ~200 KB.
GROUPS_KEPT = 1000
OTHERS = "others"


@dataclass(frozen=True, slots=True)
class Refused:
    """Refusals of one group: when (its minute), from where, on which route, how many."""

    minute: float
    client: str
    person: str  # '' without a valid token
    route: str
    status: int
    outcome: str
    count: int
    last_at: float


class Refusals:
    """Counts refusals by group until the service's writer takes them (every few seconds)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        metrics: ApiMetrics | None = None,
        groups_kept: int = GROUPS_KEPT,
    ) -> None:
        self._clock = clock
        self._metrics = metrics
        self._groups_kept = groups_kept
        self._groups: dict[tuple[float, str, str, str, int, str], list[float]] = {}

    def refused(
        self, client: str, route: str, status: int, outcome: str, *, person: str = ""
    ) -> None:
        """Count one refusal (no I/O: safe on every refused request)."""
        now = self._clock()
        minute = now - now % MINUTE_S
        key = (minute, client, person, route, status, outcome)
        if key not in self._groups and len(self._groups) >= self._groups_kept:
            key = (minute, OTHERS, person, route, status, outcome)
        group = self._groups.setdefault(key, [0, now])
        group[0] += 1
        group[1] = now
        if self._metrics is not None:
            self._metrics.refusals.labels(outcome).inc()

    @property
    def pending(self) -> int:
        return len(self._groups)

    def take(self) -> list[Refused]:
        """Everything counted since the last take, to be stored (and merged with what is)."""
        groups, self._groups = self._groups, {}
        return [
            Refused(minute, client, person, route, status, outcome, int(count), last_at)
            for (minute, client, person, route, status, outcome), (count, last_at) in groups.items()
        ]
