"""Who is asking: a bearer token looked up, failed attempts limited per address."""

from collections.abc import Callable

from facilities.access import Person, RateLimiter
from facilities.errors import RateLimited, Unauthenticated
from facilities.store import people
from facilities.store.sql import Connection


class Authenticator:
    """Bearer token → person, looked up in the database on each request (a new or revoked
    token counts at once). Failures from one address past the limit are 429 instead of 401;
    a valid token is served whatever others sent from the same address (one proxy, one
    office): only failing attempts are limited (docs/api.md, "Who may call what")."""

    def __init__(
        self,
        reader: Connection,
        *,
        failures: RateLimiter,
        clock: Callable[[], float],
    ) -> None:
        self._reader = reader
        self._failures = failures
        self._clock = clock

    async def person(self, token: str | None, client: str) -> Person:
        found = await people.by_token(self._reader, token) if token else None
        if found is not None:
            return found
        # Checked and counted in one step, with no await in between: of many concurrent
        # failures from one address, exactly the first `limit` are 401 and the rest 429.
        wait = self._failures.retry_after(client)
        self._failures.hit(client)
        if wait is not None:
            raise RateLimited(
                "too many failed authentications from this address", retry_after_s=wait
            )
        raise Unauthenticated(
            "a valid bearer token is required" if token is None else "unknown or revoked token"
        )
