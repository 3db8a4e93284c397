"""Rule ids read back from the database: a name no rule has any more is skipped, logged once."""

import logging
from collections import Counter

from facilities.rule_ids import RuleId

log = logging.getLogger(__name__)


class RuleNames:
    """Turns the `rule` text of stored rows into `RuleId`s for one load. A row naming a rule
    this version does not have (stored by a newer one, or a rule since removed) must not stop
    the start: it is left in the database as it is, not loaded, and counted; `report` logs one
    line per unknown name."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._unknown: Counter[str] = Counter()

    def parse(self, text: object) -> RuleId | None:
        """The rule named `text`, or None (counted) when no rule has that name."""
        try:
            return RuleId(str(text))
        except ValueError:
            self._unknown[str(text)] += 1
            return None

    def report(self) -> None:
        for name, rows in sorted(self._unknown.items()):
            log.warning(
                "%d stored %s name the unknown rule %r: not loaded (left in the database)",
                rows,
                self._what,
                name[:80],
            )
