"""When the store refuses a batch: find the messages it cannot take, by halves; keep the rest."""

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from facilities.store import sql

# What the store raises because of the data of a message: a value the driver cannot bind
# (OverflowError for an integer past 64 bits, ValueError for text it cannot encode) or a row
# the schema refuses (IntegrityError for a constraint, DataError for a value too big).
# Not OperationalError or DatabaseError (locked, disk full, I/O error, corrupt file): no
# message is to blame for those, and none may be quarantined or acknowledged because of them.
DATA_ERRORS: tuple[type[Exception], ...] = (
    OverflowError,
    ValueError,
    TypeError,
    *sql.DATA_ERRORS,
)

T = TypeVar("T")


async def store_by_halves(
    items: Sequence[T],
    write: Callable[[Sequence[T]], Awaitable[int]],
    quarantine: Callable[[T, Exception], T],
) -> tuple[list[T], int]:
    """Write `items` in one transaction; if the store refuses them for their data, write each
    half apart, down to the single messages it refuses, which are replaced by what
    `quarantine` makes of them (and written in turn). Return the items as stored and how many
    rows were new. One bad message in a batch of n costs about 2·log2(n) transactions.

    A quarantine row holds only text, bytes and a time: when even that is refused, the
    database is at fault, not the message, and the error is raised (nothing acknowledged).
    """
    try:
        return list(items), await write(items)
    except DATA_ERRORS as exc:
        if len(items) == 1:
            replacement = quarantine(items[0], exc)
            return [replacement], await write([replacement])
        middle = len(items) // 2
        left, new_left = await store_by_halves(items[:middle], write, quarantine)
        right, new_right = await store_by_halves(items[middle:], write, quarantine)
        return left + right, new_left + new_right
