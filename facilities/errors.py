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


class StoreError(OperatorError):
    """The database cannot be opened or migrated."""


class Refusal(FacilitiesError):  # noqa: N818  # an answer to a client, not a failure
    """A request the service refuses: an HTTP status and a short error name, with a detail
    for the client. `extra` fields join the JSON body (a command's id, say)."""

    status = 400
    error = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}


class InvalidRequest(Refusal):
    status, error = 422, "invalid_request"


class Unauthorized(Refusal):
    status, error = 401, "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(Refusal):
    status, error = 403, "forbidden"


class NotFound(Refusal):
    status, error = 404, "not_found"


class Conflict(Refusal):
    status, error = 409, "conflict"


class RateLimited(Refusal):
    status, error = 429, "rate_limited"

    def __init__(self, detail: str, *, retry_after_s: float) -> None:
        # Retry-After is whole seconds (RFC 9110 §10.2.3); round up so a client that obeys
        # it is not refused again.
        seconds = max(1, int(-(-retry_after_s // 1)))
        super().__init__(f"{detail}; retry in {seconds} s", headers={"Retry-After": str(seconds)})


class Unavailable(Refusal):
    status, error = 503, "unavailable"
