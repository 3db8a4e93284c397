"""Pages of growing lists: `limit`, an opaque `cursor`, and `next` as a path (docs/api.md)."""

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query, Request
from pydantic import AfterValidator, BeforeValidator

from facilities.errors import InvalidRequest

DEFAULT_LIMIT = 500  # docs/api.md, "Pages"
MAX_LIMIT = 5000
# Query times and the times in cursors: from the Unix epoch to 2^32 s (February 2106), the
# range of the device clocks the stored times come from (docs/protocol.md): anything past it
# selects nothing, and it keeps every time a finite float that SQLite and datetime take.
MAX_TIME_S = float(2**32)
# Row ids in cursors: SQLite's INTEGER (a larger one cannot even be bound: it was a 500).
MAX_ROWID = 2**63 - 1

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


def rowid(text: str) -> int:
    """A row id part of a cursor: an integer SQLite can hold."""
    value = int(text)
    if not 0 <= value <= MAX_ROWID:
        raise ValueError(text)
    return value


def seconds(text: str) -> float:
    """A time part of a cursor (Unix seconds): finite and within the query times' range."""
    value = float(text)
    if not 0.0 <= value <= MAX_TIME_S:  # also false for NaN
        raise ValueError(text)
    return value


def one_of(*choices: str) -> Callable[[str], str]:
    """A word part of a cursor, one of `choices`."""

    def word(text: str) -> str:
        if text not in choices:
            raise ValueError(text)
        return text

    return word


def parse_cursor(text: str, kinds: Sequence[Callable[[str], Any]]) -> tuple[Any, ...]:
    """`a,b,c` → typed parts (`rowid`, `seconds`, `one_of`, each checking its range); a
    cursor that was not ours is a 422, not a 500."""
    parts = text.split(",")
    try:
        if len(parts) != len(kinds):
            raise ValueError(text)
        return tuple(kind(part) for kind, part in zip(kinds, parts, strict=True))
    except ValueError:
        raise InvalidRequest(f"cursor {text!r} was not made by this API") from None


def _iso_only(value: object) -> object:
    """docs/api.md: query times are ISO 8601; a bare number (pydantic would read Unix
    seconds, or milliseconds past a size) is refused rather than guessed at."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("an ISO 8601 time is expected, not a number")
    return value


def _in_range(when: datetime) -> datetime:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    stamp = when.timestamp()
    if not (math.isfinite(stamp) and 0.0 <= stamp <= MAX_TIME_S):
        raise ValueError("must be from 1970-01-01 to 2106-02-07 (UTC)")
    return when


# A query time (`from`, `to`, `since`): ISO 8601, without a zone read as UTC, in range.
Time = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_in_range)]


def epoch(when: datetime) -> float:
    """Unix seconds of a query time; a time without a zone is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def utc(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None
