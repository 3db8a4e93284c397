"""The one place that maps errors to HTTP responses: always {"error", "detail"} JSON."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from facilities.errors import Refusal

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    error: str
    detail: str


_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


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
        body = {**_body(exc.error, exc.detail), **exc.extra}
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(_body("internal", type(exc).__name__), status_code=500)


Responses = dict[int | str, dict[str, Any]]


def refusal(description: str) -> dict[str, Any]:
    """An OpenAPI response entry for a refusal: an ErrorBody, and when it happens."""
    return {"model": ErrorBody, "description": description}


# Every route with parameters or a body answers 422 with the same {"error", "detail"} body
# as any other refusal (FastAPI would otherwise document its own validation error shape).
INVALID: Responses = {
    400: refusal("the body cannot be read (not UTF-8 JSON)"),
    422: refusal("a parameter or the body is not valid (`detail` says which)"),
}
