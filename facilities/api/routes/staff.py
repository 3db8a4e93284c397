"""Property managers: alerts, port power, cut-offs; the history routes from staff_history.py."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from facilities.alerts import Alert, AlertState
from facilities.api import models, views
from facilities.api.deps import (
    AskDep,
    HistoryDep,
    LiveDep,
    RequestsDep,
    StaffDep,
    TokenFirst,
)
from facilities.api.errors import INVALID, STAFF_REFUSALS, command_refusal, refusal
from facilities.api.paging import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    Time,
    epoch,
    next_path,
    parse_cursor,
    rowid,
    utc,
)
from facilities.api.routes import staff_history
from facilities.store import history, people
from facilities.verdicts import Severity

router = APIRouter(prefix="/api", tags=["staff"], responses=INVALID, route_class=TokenFirst)

Id = Annotated[str, Path(max_length=64)]


def _action(row: history.CommandRow) -> models.Action:
    return models.Action(
        command_id=row.command_id,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        tries=row.tries,
        sent_at=utc(row.sent_at),
        done_at=utc(row.done_at),
        error=row.error,
        requested_by=row.requested_by,
        cause=row.cause,
    )


def _alert(row: history.AlertRow, names: dict[str, str]) -> models.Alert:
    return models.Alert(
        id=row.id,
        rule=row.rule,
        subject=row.subject,
        severity=row.severity,
        state=row.state,
        raised_at=utc(row.raised_at),
        updated_at=utc(row.updated_at),
        cleared_at=utc(row.cleared_at),
        value=row.value,
        peak=row.peak,
        count=row.count,
        acknowledged_by=row.acknowledged_by,
        acknowledged_by_name=names.get(row.acknowledged_by or ""),
        acknowledged_at=utc(row.acknowledged_at),
        actions=[_action(a) for a in row.actions],
    )


@router.get("/alerts", responses=STAFF_REFUSALS, summary="Alerts, newest first")
async def alerts(
    request: Request,
    reader: HistoryDep,
    _staff: StaffDep,
    state: AlertState | None = None,
    severity: Severity | None = None,
    since: Annotated[Time | None, Query(description="changed at or after")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> models.Page[models.Alert]:
    before = parse_cursor(cursor, (rowid,))[0] if cursor else None
    rows = await history.alerts_page(
        reader,
        state=state.value if state else None,
        severity=severity.value if severity else None,
        since=epoch(since) if since else None,
        before=before,
        limit=limit,
    )
    names = await people.names(reader, (r.acknowledged_by for r in rows if r.acknowledged_by))
    more = str(rows[-1].rowid) if len(rows) == limit else None
    return models.Page(
        items=[_alert(r, names) for r in rows], next=next_path(request, more), next_cursor=more
    )


@router.post(
    "/alerts/{alert_id}/ack",
    responses={
        **STAFF_REFUSALS,
        404: refusal("no such alert"),
        409: refusal("the alert has cleared"),
    },
    summary="Acknowledge an alert (who and when are kept)",
)
async def acknowledge(
    requests: RequestsDep, reader: HistoryDep, staff: StaffDep, alert_id: Id
) -> models.Alert:
    alert: Alert = await requests.acknowledge(staff, alert_id)
    row = await history.alert_by_id(reader, alert.id)
    actions = [_action(a) for a in row.actions] if row else []
    return models.Alert(
        id=alert.id,
        rule=alert.rule,
        subject=alert.subject,
        severity=alert.severity.value,
        state=alert.state.value,
        raised_at=alert.raised_at,
        updated_at=alert.updated_at,
        cleared_at=alert.cleared_at,
        value=alert.value,
        peak=alert.peak,
        count=alert.count,
        acknowledged_by=alert.acknowledged_by,
        acknowledged_by_name=await _name_of(reader, alert.acknowledged_by),
        acknowledged_at=alert.acknowledged_at,
        actions=actions,
    )


async def _name_of(reader: HistoryDep, person_id: str | None) -> str | None:
    """Who acknowledged, by name: the caller, or whoever was first if it was already done."""
    return (await people.names(reader, [person_id])).get(person_id) if person_id else None


@router.post(
    "/stations/{station_id}/ports/{port}/power",
    response_model=models.CommandResult,
    responses={
        **STAFF_REFUSALS,
        404: refusal("unknown station or port"),
        413: refusal("the body is over 16 KiB (refused before it is read)"),
        409: refusal(
            "powering on while a critical alert of the port is unacknowledged or a rule that"
            " cuts it still fires; the station is offline"
        ),
        502: command_refusal("the station refused (its reason in `detail`)"),
        503: refusal("no link to the broker"),
        504: command_refusal("the station did not acknowledge in time"),
    },
    summary="Power a port off or on (a command, through the rules engine's command path)",
)
async def power(
    requests: RequestsDep,
    ask: AskDep,
    station_id: Id,
    port: Annotated[int, Path(ge=1, le=64)],
    body: models.PowerRequest,
) -> models.CommandResult:
    done = await requests.power_port(ask, station_id, port, on=body.on)
    return models.CommandResult(command_id=done.command_id, status=done.status)


@router.get(
    "/cutoffs",
    responses=STAFF_REFUSALS,
    summary="Ports the service switched off and gates it holds open: why, since when",
)
async def cutoffs(live: LiveDep, _staff: StaffDep) -> models.Cutoffs:
    return views.cutoffs(live.every_cutoff(), live.switch_on_blockers)


# the history routes, after these (the order of the API docs)
router.include_router(staff_history.router)
