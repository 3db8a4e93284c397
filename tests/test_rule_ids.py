"""Every rule has one id (`RuleId`): the rule tables run exactly those, and docs/rules.md
documents exactly those (the pages' labels: tests/test_pages.py)."""

import re

import pytest

from facilities.charging.rules import CHARGING_RULES, EVIDENCE_RULES, TIMER_RULES
from facilities.garage.rules import GARAGE_RULES
from facilities.rule_ids import RuleId
from tests.support.paths import ROOT

# Raised by the command path (a command refused or not acknowledged), not by a rule function.
NOT_A_FUNCTION = {RuleId.COMMAND_FAILED}


def _table_rules(section: str) -> list[str]:
    """The first column of the table under `## {section}` in docs/rules.md."""
    text = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    found = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert found is not None, f"docs/rules.md has no section {section!r}"
    return re.findall(r"^\| `(\w+)` \|", found.group(1), flags=re.M)


def test_the_rule_tables_run_every_rule_and_only_rules() -> None:
    assert all(isinstance(rule, RuleId) for rule in CHARGING_RULES | GARAGE_RULES)
    assert set(CHARGING_RULES) | set(GARAGE_RULES) == set(RuleId) - NOT_A_FUNCTION
    assert not set(EVIDENCE_RULES) & set(TIMER_RULES)


@pytest.mark.parametrize(
    ("section", "table"),
    [("Charging rules", CHARGING_RULES), ("Garage rules", GARAGE_RULES)],
)
def test_docs_rules_lists_each_table(section: str, table: dict[RuleId, object]) -> None:
    documented = _table_rules(section)
    assert len(documented) == len(set(documented)), f"{section}: a rule listed twice"
    assert set(documented) - NOT_A_FUNCTION == set(table)


def test_docs_rules_lists_every_rule() -> None:
    documented = set(_table_rules("Charging rules")) | set(_table_rules("Garage rules"))
    assert documented == set(RuleId)
