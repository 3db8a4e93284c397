"""The one exception tree of the service."""


class FacilitiesError(Exception):
    """Base of every error the service raises on purpose."""


class OperatorError(FacilitiesError):
    """Something the operator can fix (bad file, unreachable broker); printed as one line."""


class UsageError(OperatorError):
    """The command was given something it cannot use (an unknown id, an empty name)."""


class SiteError(OperatorError):
    """The site file is invalid; `problems` lists every error with its line."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class BrokerError(OperatorError):
    """The broker cannot be reached or used."""


class BrokerAuthError(BrokerError):
    """The broker refused our credentials: retrying will not help."""


class BrokerTlsError(BrokerError):
    """We do not trust the broker's TLS certificate (wrong CA, wrong name): at start, retrying
    will not help; later, the broker's certificate may be being replaced."""


class StoreError(OperatorError):
    """The database cannot be opened or migrated."""


class Refusal(FacilitiesError):  # noqa: N818  # an answer to a client, not a failure
    """A request the service refuses, with a detail for the client. `error` is its short
    name in every answer (docs/api.md, "Errors"); `api/errors.py` maps each kind to its
    HTTP status, the one place that does."""

    # the answer kept for a repeated Idempotency-Key, given again (`Idempotent-Replayed`)
    replayed = False

    error = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidRequest(Refusal):
    """A parameter or the body is not valid."""

    error = "invalid_request"


class Unauthenticated(Refusal):
    """No token, or one nobody holds."""

    error = "unauthorized"


class NotAllowed(Refusal):
    """The person is known but may not do this."""

    error = "forbidden"


class NotFound(Refusal):
    error = "not_found"


class Conflict(Refusal):
    """Not now, in this state (an alert cleared, a port a rule holds off, a key reused)."""

    error = "conflict"


class RateLimited(Refusal):
    """Too many; `retry_after_s`: whole seconds until one more is allowed."""

    error = "rate_limited"

    def __init__(self, detail: str, *, retry_after_s: float) -> None:
        # whole seconds, rounded up, so that a client that waits them is not refused again
        self.retry_after_s = max(1, int(-(-retry_after_s // 1)))
        super().__init__(f"{detail}; retry in {self.retry_after_s} s")


class Unavailable(Refusal):
    """The service cannot do it now (no link to the broker)."""

    error = "unavailable"


class DeviceRefused(Refusal):
    """The device answered the command with `ok: false`."""

    error = "device_refused"

    def __init__(self, detail: str, *, command_id: str) -> None:
        super().__init__(detail)
        self.command_id = command_id


class DeviceTimedOut(Refusal):
    """The device did not acknowledge the command in time."""

    error = "device_timeout"

    def __init__(self, detail: str, *, command_id: str) -> None:
        super().__init__(detail)
        self.command_id = command_id


def refusal_named(error: str) -> type[Refusal]:
    """The kind of refusal whose short name is `error` (`conflict` → Conflict); Unavailable
    for a name this version does not know."""
    # a kind is found before its subclasses, which keep its name (`NotAnswered` is an
    # `unavailable` told by the instance that was asked, facilities/owners.py)
    kinds: list[type[Refusal]] = [Refusal]
    found: dict[str, type[Refusal]] = {}
    while kinds:
        kind = kinds.pop()
        found.setdefault(kind.error, kind)
        kinds.extend(kind.__subclasses__())
    return found.get(error, Unavailable)
