"""The OpenAPI document as served at /openapi.json: FastAPI's, completed with what a client
generator and the linters need (docs/api.md, "The OpenAPI document"): servers and tags, who
may call each operation, the headers and refusals every operation may answer with, path
parameters named alike, and optional parameters that are left out rather than null."""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import TypeAdapter

from facilities.api.errors import REPLAYED
from facilities.api.events_models import LiveEvent

TAGS = [
    {"name": "public", "description": "Status for residents and the live stream: no token."},
    {"name": "residents", "description": "The garage-access app: a resident's token."},
    {"name": "staff", "description": "Property managers: a staff token."},
    {"name": "operations", "description": "Health and metrics, for the operator's monitoring."},
]

# The document names a path parameter for what it holds, alike everywhere (`{garage_id}`);
# the URL paths are the same, only their parameters' names in the document.
PATH_NAMES = {"garage": "garage_id", "gate": "gate_id"}

BEARER = "HTTPBearer"
_ERROR = {"$ref": "#/components/schemas/ErrorBody"}
_HEADERS: dict[str, dict[str, Any]] = {
    "WWW-Authenticate": {
        "description": "`Bearer`: the scheme the token is expected in",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "whole seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 0},
    },
    REPLAYED: {
        "description": "`true`: the answer kept for this Idempotency-Key, given again; "
        "nothing was sent to the gate this time",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
# Which header each status may carry.
_STATUS_HEADERS = {"401": ["WWW-Authenticate"], "429": ["Retry-After"], "503": ["Retry-After"]}


def operation_id(route: APIRoute) -> str:
    """`open_gate`, not FastAPI's `open_gate_api_garages__garage__gates__gate__open_post`:
    the route function's name (unique across the app)."""
    return route.name


def openapi(app: FastAPI) -> dict[str, Any]:
    """The document of `app`, built once and kept (FastAPI's own caching)."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
            servers=[{"url": "/", "description": "this service (the origin it is served from)"}],
            tags=TAGS,
            contact={"name": "facilities maintainers"},
            license_info={"name": "MIT", "identifier": "MIT"},
        )
        _complete(document)
        app.openapi_schema = document
    return app.openapi_schema


def _refusal(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


_REF = "#/components/schemas/{model}"

# /api/ws is a WebSocket, which OpenAPI has no operation for: described on /api/events, whose
# events it carries, and named in `x-websocket` for tools that look for it.
_WEBSOCKET = (
    "\n\nThe same events over a WebSocket: `GET /api/ws` with `Connection: Upgrade`, "
    "`Upgrade: websocket`; each text message is one `LiveEvent` as JSON "
    '(`{"id", "event", "data"}`), and the socket closes after `lagged` or `closing`. A '
    "staff token in `Authorization: Bearer` on the handshake gets the staff form of alerts; a "
    "token that is not valid: the handshake is refused (403, close code 1008). What the "
    "client sends is ignored (at most 4 KiB a message). No stream resumes: `Last-Event-ID` "
    "is ignored; after a reconnect fetch the state again."
)


def _live_events(document: dict[str, Any]) -> None:
    """The stream's events in the components (`LiveEvent`, keyed on `event`), as the content
    of /api/events and /api/ws."""
    schema = TypeAdapter(LiveEvent).json_schema(mode="serialization", ref_template=_REF)
    schemas: dict[str, Any] = document["components"]["schemas"]
    for name, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schema["description"] = (
        "An event of the live stream: `event` says which, `data` is its body. Over SSE, "
        "each is `id:`, `event:` and `data:` lines; over the WebSocket one JSON text message."
    )
    schemas["LiveEvent"] = schema
    events = document["paths"]["/api/events"]["get"]
    live_event = {"$ref": _REF.format(model="LiveEvent")}
    events["responses"]["200"]["content"] = {"text/event-stream": {"schema": live_event}}
    events["description"] = events.get("description", events["summary"]) + _WEBSOCKET
    events["x-websocket"] = {"path": "/api/ws", "message": live_event}


def _complete(document: dict[str, Any]) -> None:
    _live_events(document)
    paths: dict[str, dict[str, Any]] = document["paths"]
    for path in list(paths):
        renamed = path
        for old, new in PATH_NAMES.items():
            renamed = renamed.replace(f"{{{old}}}", f"{{{new}}}")
        paths[renamed] = paths.pop(path)
    for path, item in paths.items():
        for method, operation in item.items():
            _operation(path, method, operation)


def _operation(path: str, method: str, operation: dict[str, Any]) -> None:
    operation.setdefault("description", operation.get("summary", ""))
    operation.setdefault("tags", ["operations"])
    parameters = operation.get("parameters", [])
    for parameter in parameters:
        if parameter["in"] == "path":
            parameter["name"] = PATH_NAMES.get(parameter["name"], parameter["name"])
        elif not parameter.get("required", False):
            parameter["schema"] = _not_null(parameter["schema"])
    has_token = any(BEARER in s for s in operation.get("security", []))
    if path == "/api/events":
        operation["security"] = [{}, {BEARER: []}]  # a token is optional: the staff form
    elif not has_token:
        operation["security"] = []  # public
    responses: dict[str, Any] = operation["responses"]
    if method == "get":
        responses.pop("400", None)  # no body to be unreadable
    if not parameters and "requestBody" not in operation:
        responses.pop("422", None)  # nothing to be invalid
    else:
        responses.setdefault("413", _refusal("the body is over 16 KiB (refused before it is read)"))
    responses.setdefault("500", _refusal("the service failed (`internal`; it is logged)"))
    for status, response in responses.items():
        for header in _STATUS_HEADERS.get(status, []):
            response.setdefault("headers", {})[header] = _HEADERS[header]
    if operation.get("operationId") == "open_gate":
        for status in ("200", "502", "504"):
            responses[status].setdefault("headers", {})[REPLAYED] = _HEADERS[REPLAYED]


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter's schema without `null`: it is left out, never sent as null."""
    choices = [c for c in schema.get("anyOf", []) if c.get("type") != "null"]
    if len(choices) != 1 or not schema.get("anyOf"):
        return schema
    kept = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**choices[0], **kept}
