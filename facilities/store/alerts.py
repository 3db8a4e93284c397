"""Alerts and their history: transitions saved, open alerts loaded, removed devices forgotten."""

from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime

from facilities.alerts import Alert, AlertState, Change, Transition, device_of
from facilities.store.rule_names import RuleNames
from facilities.store.sql import Connection
from facilities.verdicts import Severity

_UPSERT_ALERT = """
INSERT INTO alerts (id, rule, subject, severity, state, raised_at, updated_at, cleared_at,
                    value, peak, count, clear_since, acknowledged_by, acknowledged_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    severity = excluded.severity, state = excluded.state, updated_at = excluded.updated_at,
    cleared_at = excluded.cleared_at, value = excluded.value, peak = excluded.peak,
    count = excluded.count, clear_since = excluded.clear_since,
    acknowledged_by = excluded.acknowledged_by, acknowledged_at = excluded.acknowledged_at
"""


def _ts(when: datetime | None) -> float | None:
    return when.timestamp() if when else None


def _dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _alert_row(a: Alert) -> tuple[object, ...]:
    return (
        a.id,
        a.rule,
        a.subject,
        a.severity.value,
        a.state.value,
        _ts(a.raised_at),
        _ts(a.updated_at),
        _ts(a.cleared_at),
        a.value,
        a.peak,
        a.count,
        _ts(a.clear_since),
        a.acknowledged_by,
        _ts(a.acknowledged_at),
    )


async def save_transitions(conn: Connection, transitions: Iterable[Transition]) -> None:
    """Upsert each alert (its latest version) and append its changes of state to the history
    (raised, escalated, acknowledged, cleared; updates only move the alert row). Call it
    inside a transaction (`SharedWriter.transaction`), as every writer here."""
    transitions = list(transitions)
    if not transitions:
        return
    latest = {tr.alert.id: tr.alert for tr in transitions}
    history = [
        (
            tr.alert.id,
            tr.change.value,
            _ts(tr.alert.updated_at),
            tr.alert.severity.value,
            tr.alert.state.value,
            tr.alert.value,
        )
        for tr in transitions
        if tr.change is not Change.UPDATED
    ]
    await conn.executemany(_UPSERT_ALERT, [_alert_row(a) for a in latest.values()])
    if history:
        await conn.executemany(
            "INSERT INTO alert_events (alert_id, change, at, severity, state, value)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            history,
        )


async def load_open_alerts(conn: Connection) -> dict[tuple[str, str], Alert]:
    """The open alerts, by (rule, subject); one naming a rule this version does not have is
    skipped and logged (`RuleNames`)."""
    sql = (
        "SELECT id, rule, subject, severity, state, raised_at, updated_at, value, peak, count,"
        " clear_since, acknowledged_by, acknowledged_at FROM alerts WHERE state != 'cleared'"
    )
    rules = RuleNames("open alerts")
    # by (rule, subject) as the engine keeps them; a plain string finds a `RuleId` key
    alerts: dict[tuple[str, str], Alert] = {}
    async with conn.execute(sql) as cursor:
        async for row in cursor:
            rule = rules.parse(row[1])
            if rule is None:
                continue
            alert = Alert(
                id=str(row[0]),
                rule=rule,
                subject=str(row[2]),
                severity=Severity(row[3]),
                state=AlertState(row[4]),
                raised_at=_dt(row[5]) or datetime.now(UTC),
                updated_at=_dt(row[6]) or datetime.now(UTC),
                value=row[7],
                peak=row[8],
                count=int(row[9]),
                clear_since=_dt(row[10]),
                acknowledged_by=row[11],
                acknowledged_at=_dt(row[12]),
            )
            alerts[alert.key] = alert
    rules.report()
    return alerts


async def forget_removed(
    conn: Connection,
    *,
    devices: Collection[str],
    in_site: Callable[[str], bool],
    now: datetime,
    mine: Callable[[str], bool] | None = None,
) -> dict[str, int]:
    """Close the open alerts whose subject is no longer in the site (`in_site`) and drop the
    saved live state of every device not in `devices` (removed from the site file): each
    alert is cleared, with the reason in its history. Return each device concerned, with
    how many alerts it had open. `mine`: only of the devices it says yes to (a partition's)."""
    async with conn.execute("SELECT id, subject FROM alerts WHERE state != 'cleared'") as cur:
        alerts = [(str(i), str(subject)) for i, subject in await cur.fetchall()]
    async with conn.execute("SELECT device FROM live_state") as cur:
        gone = [str(device) for (device,) in await cur.fetchall() if device not in devices]
    if mine is not None:
        alerts = [(i, subject) for i, subject in alerts if mine(device_of(subject))]
        gone = [device for device in gone if mine(device)]
    forgotten = dict.fromkeys(gone, 0)
    closed = []
    for alert_id, subject in alerts:
        if not in_site(subject):
            device = device_of(subject)
            forgotten[device] = forgotten.get(device, 0) + 1
            closed.append((alert_id, f"{subject} is no longer in the site file"))
    at = now.timestamp()
    await conn.executemany(
        "UPDATE alerts SET state = 'cleared', cleared_at = ?, updated_at = ? WHERE id = ?",
        [(at, at, alert_id) for alert_id, _ in closed],
    )
    await conn.executemany(
        "INSERT INTO alert_events (alert_id, change, at, severity, state, value, detail)"
        " SELECT id, 'cleared', ?, severity, 'cleared', value, ? FROM alerts WHERE id = ?",
        [(at, detail, alert_id) for alert_id, detail in closed],
    )
    await conn.executemany("DELETE FROM live_state WHERE device = ?", [(d,) for d in gone])
    return forgotten


async def state_of(conn: Connection, alert_id: str) -> str | None:
    """The stored state of an alert (`active`, `acknowledged`, `cleared`), None if none."""
    async with conn.execute("SELECT state FROM alerts WHERE id = ?", (alert_id,)) as cursor:
        row = await cursor.fetchone()
    return None if row is None else str(row[0])
