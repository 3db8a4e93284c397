"""Property managers: alerts, port power, sessions, telemetry history, audit log."""

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from facilities.alerts import Alert, AlertState
from facilities.api import models, views
from facilities.api.deps import (
    AskDep,
    HistoryDep,
    LiveDep,
    NowDep,
    RequestsDep,
    SiteDep,
    StaffDep,
    TokenFirst,
)
from facilities.api.errors import INVALID, Responses, refusal
from facilities.api.paging import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    Time,
    epoch,
    next_path,
    one_of,
    parse_cursor,
    rowid,
    seconds,
    utc,
)
from facilities.errors import NotFound
from facilities.site import Site
from facilities.store import audit, history
from facilities.verdicts import Severity

router = APIRouter(prefix="/api", tags=["staff"], responses=INVALID, route_class=TokenFirst)

Id = Annotated[str, Path(max_length=64)]
From = Annotated[Time | None, Query(alias="from", description="ISO 8601; default 24 h ago")]
To = Annotated[Time | None, Query(description="ISO 8601; default now")]
DEFAULT_SPAN = timedelta(hours=24)
# A bucket of at least a second, at most 31 days.
Step = Annotated[
    float | None, Query(ge=1, le=31 * 86400, description="seconds per bucket: downsampled")
]


_AUTH: Responses = {
    401: refusal("no valid token"),
    403: refusal("not staff"),
    429: refusal("rate limited"),
}


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


def _alert(row: history.AlertRow) -> models.Alert:
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
        acknowledged_at=utc(row.acknowledged_at),
        actions=[_action(a) for a in row.actions],
    )


@router.get("/alerts", responses=_AUTH, summary="Alerts, newest first")
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
    more = str(rows[-1].rowid) if len(rows) == limit else None
    return models.Page(items=[_alert(r) for r in rows], next=next_path(request, more))


@router.post(
    "/alerts/{alert_id}/ack",
    responses={**_AUTH, 404: refusal("no such alert"), 409: refusal("the alert has cleared")},
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
        acknowledged_at=alert.acknowledged_at,
        actions=actions,
    )


@router.post(
    "/stations/{station_id}/ports/{port}/power",
    response_model=models.CommandResult,
    responses={
        **_AUTH,
        404: refusal("unknown station or port"),
        413: refusal("the body is over 16 KiB (refused before it is read)"),
        409: refusal(
            "powering on while a critical alert of the port is unacknowledged or a rule that"
            " cuts it still fires; the station is offline"
        ),
        502: refusal("the station refused"),
        503: refusal("no link to the broker"),
        504: refusal("the station did not acknowledge in time"),
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
    responses=_AUTH,
    summary="Ports the service switched off and gates it holds open: why, since when",
)
async def cutoffs(live: LiveDep, _staff: StaffDep) -> models.Cutoffs:
    return views.cutoffs(live.cutoffs()[1])


def _span(
    service_now: datetime, start: datetime | None, end: datetime | None
) -> tuple[float, float]:
    end_s = epoch(end) if end else service_now.timestamp()
    start_s = epoch(start) if start else end_s - DEFAULT_SPAN.total_seconds()
    return start_s, end_s


def _known_station(site: Site, station_id: str) -> str:
    if station_id not in site.stations:
        raise NotFound(f"no station {station_id}")
    return station_id


@router.get(
    "/stations/{station_id}/sessions",
    responses={**_AUTH, 404: refusal("unknown station")},
    summary="Charging sessions that started in [from, to), oldest first",
)
async def sessions(
    request: Request,
    site: SiteDep,
    now: NowDep,
    reader: HistoryDep,
    _staff: StaffDep,
    station_id: Id,
    start: From = None,
    to: To = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> models.Page[models.Session]:
    station = _known_station(site, station_id)
    start_s, end_s = _span(now, start, to)
    after = parse_cursor(cursor, (rowid,))[0] if cursor else None
    rows = await history.sessions_page(
        reader, station, start=start_s, end=end_s, after=after, limit=limit
    )
    items = [
        models.Session(
            port=r.port,
            started_at=utc(r.started_at),
            ended_at=utc(r.ended_at),
            energy_wh=r.energy_wh,
            peak_w=r.peak_w,
            end_reason=r.end_reason,
        )
        for r in rows
    ]
    more = str(rows[-1].id) if len(rows) == limit else None
    return models.Page(items=items, next=next_path(request, more))


@router.get(
    "/stations/{station_id}/telemetry",
    responses={**_AUTH, 404: refusal("unknown station")},
    summary="History for charts: raw messages, or buckets of `step` seconds per port",
)
async def telemetry(
    request: Request,
    site: SiteDep,
    now: NowDep,
    reader: HistoryDep,
    _staff: StaffDep,
    station_id: Id,
    start: From = None,
    to: To = None,
    step: Step = None,
    port: Annotated[int | None, Query(ge=1, le=64, description="only this port")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> models.Page[models.TelemetrySample] | models.Page[models.TelemetryBucket]:
    station = _known_station(site, station_id)
    start_s, end_s = _span(now, start, to)
    after = parse_cursor(cursor, (seconds, rowid)) if cursor else None
    if step is not None:
        buckets = await history.telemetry_buckets(
            reader,
            station,
            start=start_s,
            end=end_s,
            step_s=step,
            port=port,
            after=after,
            limit=limit,
        )
        more = f"{buckets[-1].start!r},{buckets[-1].port}" if len(buckets) == limit else None
        return models.Page[models.TelemetryBucket](
            items=[
                models.TelemetryBucket(
                    start=utc(b.start),
                    port=b.port,
                    samples=b.samples,
                    avg_power_w=b.avg_power_w,
                    max_power_w=b.max_power_w,
                    last_state=b.last_state,
                )
                for b in buckets
            ],
            next=next_path(request, more),
        )
    samples = await history.telemetry_page(
        reader, station, start=start_s, end=end_s, port=port, after=after, limit=limit
    )
    more = f"{samples[-1].ts!r},{samples[-1].seq}" if len(samples) == limit else None
    return models.Page[models.TelemetrySample](
        items=[
            models.TelemetrySample(
                seq=s.seq,
                ts=utc(s.ts),
                received_at=utc(s.received_at),
                temp_c=s.temp_c,
                leakage_ma=s.leakage_ma,
                smoke=s.smoke,
                ports=[models.PortReading.model_validate(p, from_attributes=True) for p in s.ports],
            )
            for s in samples
        ],
        next=next_path(request, more),
    )


@router.get(
    "/audit",
    responses=_AUTH,
    summary="Every command sent and every gate-open or power request, oldest first",
)
async def audit_log(
    request: Request,
    reader: HistoryDep,
    _staff: StaffDep,
    since: Annotated[Time | None, Query(description="at or after; default: all")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> models.Page[models.AuditEntry]:
    after = (
        parse_cursor(cursor, (seconds, one_of("command", "refusals", "request"), rowid))
        if cursor
        else None
    )
    rows = await audit.audit_page(
        reader,
        since=epoch(since) if since else float("-inf"),
        after=after,
        limit=limit,
    )
    items = [
        models.AuditEntry(
            at=utc(r.at),
            kind=r.kind,
            action=r.action,
            target=r.target,
            who=r.who,
            outcome=r.outcome,
            status=r.status,
            detail=r.detail,
            command_id=r.command_id,
            reason=r.reason,
            client=r.client,
            cause=r.cause,
            idempotency_key=r.idempotency_key,
        )
        for r in rows
    ]
    last = rows[-1] if rows else None
    more = f"{last.at!r},{last.kind},{last.rowid}" if last and len(rows) == limit else None
    return models.Page(items=items, next=next_path(request, more))
