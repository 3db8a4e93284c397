"""Property managers read the quarantine: what devices sent that the service refused, and why."""

import base64
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import Field

from facilities.api import models
from facilities.api.deps import HistoryDep, StaffDep, TokenFirst
from facilities.api.errors import INVALID, STAFF_REFUSALS
from facilities.api.paging import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    next_path,
    parse_cursor,
    rowid,
    seconds,
)
from facilities.messages import RejectReason
from facilities.site import ID_PATTERN
from facilities.store.quarantine import QuarantineRow, quarantine_page

router = APIRouter(prefix="/api", tags=["staff"], responses=INVALID, route_class=TokenFirst)

Device = Annotated[
    str | None,
    Query(
        pattern=ID_PATTERN,
        description="only this station's or garage's messages (a garage's include its gates')",
    ),
]
Reason = Annotated[RejectReason | None, Query(description="only those refused for this reason")]


class QuarantinedMessage(models.Out):
    """A device message the service refused, as kept (docs/protocol.md, "What happens to bad
    input"): never the whole of a large one."""

    received_at: datetime
    device: str | None = Field(
        description="the station or garage its topic names; null: no device of the site file"
    )
    topic: str = Field(description="as received, cut at 256 characters")
    reason: RejectReason
    detail: str = Field(description="what was wrong")
    size: int = Field(description="bytes of the whole message")
    payload: str = Field(
        description="its first 1 KiB as UTF-8 text (bytes that are not UTF-8 shown as U+FFFD)"
    )
    payload_base64: str = Field(description="its first 1 KiB exactly, in base64")
    truncated: bool = Field(description="the message was longer than what is kept")


def _item(row: QuarantineRow) -> QuarantinedMessage:
    return QuarantinedMessage(
        received_at=datetime.fromtimestamp(row.received_at, UTC),
        device=row.device or None,
        topic=row.topic,
        reason=RejectReason(row.reason),
        detail=row.detail,
        size=row.size,
        payload=row.payload.decode("utf-8", "replace"),
        payload_base64=base64.b64encode(row.payload).decode("ascii"),
        truncated=row.size > len(row.payload),
    )


@router.get(
    "/quarantine",
    responses=STAFF_REFUSALS,
    summary="Quarantined device messages, newest first, by device and reason",
)
async def quarantine(
    request: Request,
    reader: HistoryDep,
    _staff: StaffDep,
    device: Device = None,
    reason: Reason = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> models.Page[QuarantinedMessage]:
    after = parse_cursor(cursor, (seconds, rowid)) if cursor else None
    rows = await quarantine_page(
        reader,
        device=device,
        reason=reason.value if reason else None,
        after=after,
        limit=limit,
    )
    last = rows[-1] if rows else None
    more = f"{last.received_at!r},{last.id}" if last and len(rows) == limit else None
    return models.Page(
        items=[_item(row) for row in rows], next=next_path(request, more), next_cursor=more
    )
