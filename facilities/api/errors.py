"""The one place that maps errors to HTTP responses: always {"error", "detail"} JSON."""

import logging
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from facilities.errors import (
    Conflict,
    DeviceRefused,
    DeviceTimedOut,
    InvalidRequest,
    NotAllowed,
    NotFound,
    RateLimited,
    Refusal,
    Unauthenticated,
    Unavailable,
)
from facilities.write_faults import database_fault, fault_of

log = logging.getLogger(__name__)


class ErrorName(StrEnum):
    """The `error` of every refusal (docs/api.md, "Errors")."""

    BAD_REQUEST = "bad_request"
    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"
    DEVICE_REFUSED = "device_refused"
    UNAVAILABLE = "unavailable"
    DEVICE_TIMEOUT = "device_timeout"
    HTTP_ERROR = "http_error"


class ErrorBody(BaseModel):
    error: ErrorName
    detail: str


class CommandErrorBody(ErrorBody):
    """A command sent to a device that refused it (502) or did not acknowledge it (504)."""

    command_id: str = Field(description="the command sent: find it in the audit log")


_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


# Each kind of refusal and its status (docs/api.md, "Errors"); a kind not listed is a 400.
_STATUSES: dict[type[Refusal], int] = {
    InvalidRequest: 422,
    Unauthenticated: 401,
    NotAllowed: 403,
    NotFound: 404,
    Conflict: 409,
    RateLimited: 429,
    DeviceRefused: 502,
    Unavailable: 503,
    DeviceTimedOut: 504,
}


def http_status(refusal: Refusal | None) -> int:
    """The status a refusal is answered with (200: none, the request was done)."""
    if refusal is None:
        return 200
    return next((s for kind, s in _STATUSES.items() if isinstance(refusal, kind)), 400)


def refusal_body(refusal: Refusal) -> dict[str, str]:
    """The JSON body of a refusal: `{"error", "detail"}`, and the command's id when one was
    sent."""
    body = _body(refusal.error, refusal.detail)
    if isinstance(refusal, DeviceRefused | DeviceTimedOut):
        body["command_id"] = refusal.command_id
    return body


def _headers(refusal: Refusal) -> dict[str, str]:
    if isinstance(refusal, Unauthenticated):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(refusal, RateLimited):
        return {"Retry-After": str(refusal.retry_after_s)}  # RFC 9110 §10.2.3: whole seconds
    if refusal.replayed:
        return {REPLAYED: "true"}
    return {}


# A database that cannot answer (locked, restarting): when a client may ask again.
DATABASE_RETRY_S = 5

# Set on the answer given again for a repeated Idempotency-Key (docs/api.md).
REPLAYED = "Idempotent-Replayed"


def _body(error: str, detail: str) -> dict[str, str]:
    return {"error": error, "detail": detail}


def install_error_handlers(app: FastAPI) -> None:
    """Every refusal as {"error", "detail"} with the right status; never a bare 500."""

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        name = _NAMES.get(exc.status_code, "http_error")
        return JSONResponse(
            _body(name, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse(_body("invalid_request", detail), status_code=422)

    @app.exception_handler(Refusal)
    async def refused(_request: Request, exc: Refusal) -> JSONResponse:
        return JSONResponse(refusal_body(exc), status_code=http_status(exc), headers=_headers(exc))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        if database_fault(exc):  # locked past its busy timeout, gone, full: not the client's
            log.warning("a request the database could not answer: %s", exc)
            detail = f"the database cannot be used now ({fault_of(exc)}): try again shortly"
            headers = {"Retry-After": str(DATABASE_RETRY_S)}
            return JSONResponse(_body("unavailable", detail), status_code=503, headers=headers)
        log.exception("unexpected error")
        return JSONResponse(_body("internal", type(exc).__name__), status_code=500)


Responses = dict[int | str, dict[str, Any]]


def refusal(description: str) -> dict[str, Any]:
    """An OpenAPI response entry for a refusal: an ErrorBody, and when it happens."""
    return {"model": ErrorBody, "description": description}


def command_refusal(description: str) -> dict[str, Any]:
    """An OpenAPI response entry for a 502 or 504 about a command: with its `command_id`."""
    return {"model": CommandErrorBody, "description": description}


# Every route with parameters or a body answers 422 with the same {"error", "detail"} body
# as any other refusal (FastAPI would otherwise document its own validation error shape).
INVALID: Responses = {
    400: refusal("the body cannot be read (not UTF-8 JSON)"),
    422: refusal("a parameter or the body is not valid (`detail` says which)"),
}

# The refusals of every staff route: before anything else, the token (api/deps.py, TokenFirst).
STAFF_REFUSALS: Responses = {
    401: refusal("no valid token"),
    403: refusal("not staff"),
    429: refusal("rate limited"),
}
