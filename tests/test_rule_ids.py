"""Every rule has one id (`RuleId`): the rule tables run exactly those, and docs/rules.md
documents exactly those (the pages' labels: tests/test_pages.py)."""

import logging
import re
from datetime import UTC, datetime

import pytest

from facilities.alerts import Alert, AlertState, Change, Transition
from facilities.charging.rules import CHARGING_RULES, EVIDENCE_RULES
from facilities.charging.timer_rules import TIMER_RULES
from facilities.cutoffs import Cutoff
from facilities.garage.rules import GARAGE_RULES
from facilities.rule_ids import RuleId
from facilities.service import run
from facilities.settings import Settings
from facilities.site import Site
from facilities.store.alerts import save_transitions
from facilities.store.db import open_db
from facilities.store.snapshots import save_cutoffs
from facilities.verdicts import Severity
from facilities.wiring import build
from tests.support.db import query
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


def _stored_alert(rule: RuleId, subject: str, at: datetime) -> Alert:
    return Alert(rule, subject, Severity.CRITICAL, AlertState.ACTIVE, raised_at=at, updated_at=at)


async def test_a_stored_row_naming_an_unknown_rule_is_skipped_at_start(
    settings: Settings, site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """A database written by another version (a rule since renamed or removed): the start
    loads what it knows, logs the rest once and leaves those rows as they are."""
    at = datetime.now(UTC)
    kept = _stored_alert(RuleId.SMOKE, "cs-01", at)
    retired = _stored_alert(RuleId.LEAKAGE, "cs-02", at)
    conn = await open_db(settings.db)
    try:
        await save_transitions(conn, [Transition(Change.RAISED, a) for a in (kept, retired)])
        await save_cutoffs(
            conn,
            [Cutoff("cs-01", 1, None, True, a.rule, a.id, a.subject, at) for a in (kept, retired)],
        )
        await conn.execute("UPDATE alerts SET rule = 'retired_rule' WHERE id = ?", (retired.id,))
        await conn.execute(
            "UPDATE cutoffs SET rule = 'retired_rule' WHERE alert_id = ?", (retired.id,)
        )
        await conn.commit()
    finally:
        await conn.close()

    with caplog.at_level(logging.WARNING, logger="facilities.store.rule_names"):
        async with run(build(settings, site)) as service:
            assert [a.id for a in service.live.open_alerts()] == [kept.id]
            assert {c.alert_id for c in service.live.cutoffs()[1]} == {kept.id}
    unknown = [r.getMessage() for r in caplog.records if "retired_rule" in r.getMessage()]
    assert len(unknown) == 2, unknown  # once for the alerts, once for the cut-offs
    assert query(settings.db, "SELECT state FROM alerts WHERE id = ?", retired.id) == [("active",)]
