"""Who may do what: people and their tokens, garage registration, rate limits. Pure."""

import hashlib
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

# 32 random bytes: a token cannot be guessed, so a fast hash (SHA-256) is enough to store it;
# a slow password hash would only slow every request down.
TOKEN_BYTES = 32
# Keys a rate limiter remembers before it forgets those whose window has passed: bounds the
# memory an attacker can make it use by rotating client addresses.
LIMITER_KEYS_KEPT = 10_000


class Role(StrEnum):
    RESIDENT = "resident"
    STAFF = "staff"


@dataclass(frozen=True, slots=True)
class Person:
    """A resident or a member of staff, as their token identifies them."""

    id: str
    role: Role
    name: str
    garages: frozenset[str] = frozenset()  # residents: the garages they may open

    def may_open(self, garage: str) -> bool:
        return self.role is Role.RESIDENT and garage in self.garages


def new_token() -> str:
    """A new random bearer token (URL-safe text, 43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """What is stored of a token, and how a presented token is looked up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_person_id(role: Role) -> str:
    return f"{role.value[0]}-{secrets.token_hex(4)}"


class RateLimiter:
    """At most `limit` hits per key in any `window_s` seconds (a sliding window log), on a
    monotonic clock: a wall clock stepped back or forward does not change the window. Tests
    move the clock they pass instead of sleeping."""

    def __init__(
        self, limit: int, window_s: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError("a rate limit allows at least one hit")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may be hit again, or None when it may now."""
        hits = self._hits.get(key)
        if hits is None:
            return None
        now = self._clock()
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) < self.limit:
            return None
        return hits[0] + self.window_s - now

    def hit(self, key: str) -> None:
        now = self._clock()
        if key not in self._hits and len(self._hits) >= LIMITER_KEYS_KEPT:
            self._forget(now)
        self._hits.setdefault(key, deque(maxlen=self.limit)).append(now)

    def _forget(self, now: float) -> None:
        stale = [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - self.window_s]
        for key in stale:
            del self._hits[key]
        if len(self._hits) >= LIMITER_KEYS_KEPT:  # all busy: drop the oldest-seen half
            for key in list(self._hits)[: LIMITER_KEYS_KEPT // 2]:
                del self._hits[key]
