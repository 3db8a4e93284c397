"""Pages of growing lists (API.md): `limit`, an opaque `cursor`, and `next` as a path."""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query, Request

from facilities.errors import InvalidRequest

DEFAULT_LIMIT = 500  # API.md
MAX_LIMIT = 5000

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")]
Cursor = Annotated[
    str | None,
    Query(max_length=200, description="where the page starts: taken from a `next` path"),
]


def next_path(request: Request, cursor: str | None) -> str | None:
    """The path of the next page: this request's query with the cursor moved on."""
    if cursor is None:
        return None
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    query.append(("cursor", cursor))
    return f"{request.url.path}?{urlencode(query)}"


def parse_cursor(text: str, kinds: Sequence[Callable[[str], Any]]) -> tuple[Any, ...]:
    """`a,b,c` → typed parts; a cursor that was not ours is a 422, not a 500."""
    parts = text.split(",")
    try:
        if len(parts) != len(kinds):
            raise ValueError(text)
        return tuple(kind(part) for kind, part in zip(kinds, parts, strict=True))
    except ValueError:
        raise InvalidRequest(f"cursor {text!r} was not made by this API") from None


def epoch(when: datetime) -> float:
    """Unix seconds of a query time; a time without a zone is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def utc(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None
