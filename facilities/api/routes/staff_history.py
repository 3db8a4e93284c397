"""Property managers read the past: charging sessions, telemetry for charts, the audit log."""

# Included in staff.py's router (its prefix, tags and token check).

from datetime import datetime, timedelta
from typing import Annotated, NamedTuple

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field

from facilities.api import models
from facilities.api.deps import HistoryDep, NowDep, SiteDep, StaffDep, TokenFirst
from facilities.api.errors import STAFF_REFUSALS, refusal
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

router = APIRouter(route_class=TokenFirst)  # prefix, tags, responses: staff.py's

Id = Annotated[str, Path(max_length=64)]
From = Annotated[Time | None, Query(alias="from", description="ISO 8601; default 24 h ago")]
To = Annotated[Time | None, Query(description="ISO 8601; default now")]
DEFAULT_SPAN = timedelta(hours=24)
# A bucket of at least a second, at most 31 days.
Step = Annotated[
    float | None, Query(ge=1, le=31 * 86400, description="seconds per bucket: downsampled")
]
Port = Annotated[int | None, Query(ge=1, le=64, description="only this port")]


class _Query(NamedTuple):
    """A telemetry request as the store takes it."""

    station: str
    start: float
    end: float
    port: int | None
    after: tuple[float, int] | None
    limit: int


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
    responses={**STAFF_REFUSALS, 404: refusal("unknown station")},
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
    return models.Page(items=items, next=next_path(request, more), next_cursor=more)


@router.get(
    "/stations/{station_id}/telemetry",
    responses={**STAFF_REFUSALS, 404: refusal("unknown station")},
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
    port: Port = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Annotated[models.TelemetrySamples | models.TelemetryBuckets, Field(discriminator="kind")]:
    station = _known_station(site, station_id)
    start_s, end_s = _span(now, start, to)
    after = parse_cursor(cursor, (seconds, rowid)) if cursor else None
    query = _Query(station, start_s, end_s, port, after, limit)
    if step is not None:
        return await _buckets(request, reader, query, step_s=step)
    return await _samples(request, reader, query)


async def _buckets(
    request: Request, reader: HistoryDep, query: _Query, *, step_s: float
) -> models.TelemetryBuckets:
    """A page of `step_s`-second buckets per port."""
    buckets = await history.telemetry_buckets(
        reader,
        query.station,
        start=query.start,
        end=query.end,
        step_s=step_s,
        port=query.port,
        after=query.after,
        limit=query.limit,
    )
    more = f"{buckets[-1].start!r},{buckets[-1].port}" if len(buckets) == query.limit else None
    return models.TelemetryBuckets(
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
        next_cursor=more,
    )


async def _samples(request: Request, reader: HistoryDep, query: _Query) -> models.TelemetrySamples:
    """A page of the messages as received."""
    samples = await history.telemetry_page(
        reader,
        query.station,
        start=query.start,
        end=query.end,
        port=query.port,
        after=query.after,
        limit=query.limit,
    )
    more = f"{samples[-1].ts!r},{samples[-1].seq}" if len(samples) == query.limit else None
    return models.TelemetrySamples(
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
        next_cursor=more,
    )


@router.get(
    "/audit",
    responses=STAFF_REFUSALS,
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
    return models.Page(items=items, next=next_path(request, more), next_cursor=more)
