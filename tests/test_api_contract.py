"""The HTTP contract as app developers meet it (docs/api.md, "The OpenAPI document" and
"Browser apps (CORS)"): the served /openapi.json passes Redocly's recommended ruleset and
Spectral's `oas` ruleset, and names what clients generate code from; a browser app of a
configured origin passes its preflight, any other origin does not."""

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from facilities.access import Role
from facilities.api.app import create_app
from facilities.cli import build_parser
from facilities.errors import UsageError
from facilities.options import from_arguments
from facilities.service import run
from facilities.settings import Settings
from facilities.site import Site
from facilities.wiring import build
from tests.api_support import Api, bearer
from tests.support.clock import MovableClock
from tests.support.npm import npm_tools
from tests.support.poll import wait_for

APP = "https://app.example.org"


@pytest.fixture
async def served_document(api: Api, tmp_path: Path) -> Path:
    """/openapi.json as the app serves it, in a file the linters read."""
    answer = await api.http.get("/openapi.json")
    assert answer.status_code == 200
    path = tmp_path / "openapi.json"
    path.write_text(answer.text, "utf-8")
    return path


@pytest.mark.slow  # Node starts the linter: 3-6 s
def test_redocly_finds_no_error(served_document: Path) -> None:
    tool = npm_tools() / "redocly"
    done = subprocess.run(
        [tool, "lint", "--extends", "recommended", "--format", "json", served_document],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=served_document.parent,
    )
    report = json.loads(done.stdout)
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert errors == [], json.dumps(errors, indent=1)[:4000]
    assert report["totals"]["errors"] == 0


@pytest.mark.slow
def test_spectral_finds_no_warning(served_document: Path) -> None:
    ruleset = served_document.parent / ".spectral.yaml"
    ruleset.write_text('extends: ["spectral:oas"]\n', "utf-8")
    tool = npm_tools() / "spectral"
    done = subprocess.run(
        [tool, "lint", "-r", ruleset, "-f", "json", "--quiet", served_document],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=served_document.parent,
    )
    problems = json.loads(done.stdout or "[]")
    # Spectral's severities: 0 error, 1 warning, 2 info, 3 hint
    found = [(p["code"], p["path"], p["message"]) for p in problems if p["severity"] <= 1]
    assert found == []
    assert done.returncode == 0, done.stderr


async def test_the_document_names_what_clients_generate_code_from(api: Api) -> None:
    document: dict[str, Any] = (await api.http.get("/openapi.json")).json()
    operations = {
        op["operationId"]: (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    }
    assert "open_gate" in operations
    assert all("_api_" not in name for name in operations), sorted(operations)
    path, _method, open_gate = operations["open_gate"]
    assert path == "/api/garages/{garage_id}/gates/{gate_id}/open"
    assert [p["name"] for p in open_gate["parameters"] if p["in"] == "path"] == [
        "garage_id",
        "gate_id",
    ]
    for status in ("200", "502", "504"):
        assert "Idempotent-Replayed" in open_gate["responses"][status]["headers"]
    for status in ("502", "504"):
        schema = open_gate["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/CommandErrorBody"}
    schemas = document["components"]["schemas"]
    assert "command_id" in schemas["CommandErrorBody"]["required"]
    for name, (_path, method, op) in operations.items():
        responses = op["responses"]
        assert "500" in responses, name
        assert method != "get" or "400" not in responses, name
        assert method == "get" or "413" in responses, name
        if "401" in responses:
            assert "WWW-Authenticate" in responses["401"]["headers"], name
        if "429" in responses:
            assert "Retry-After" in responses["429"]["headers"], name
        for parameter in op.get("parameters", []):
            if not parameter.get("required"):
                assert "null" not in json.dumps(parameter["schema"]), (name, parameter)
    assert operations["communities"][2]["security"] == []
    assert operations["alerts"][2]["security"] == [{"HTTPBearer": []}]
    # fixed sets of values are enums, the same everywhere
    assert schemas["Severity"]["enum"] == ["info", "warning", "critical"]
    assert set(schemas["PortStatus"]["enum"]) >= {"idle", "charging", "fault"}
    for model, field in (("Port", "state"), ("PortReading", "state")):
        assert schemas[model]["properties"][field] == {"$ref": "#/components/schemas/PortStatus"}
    assert schemas["TelemetryBucket"]["properties"]["last_state"]["$ref"].endswith("PortStatus")
    for model, field in (("Action", "outcome"), ("Session", "end_reason"), ("Me", "role")):
        assert "$ref" in schemas[model]["properties"][field], (model, field)
    assert "enum" in schemas["ErrorName"]
    telemetry = operations["telemetry"][2]["responses"]["200"]["content"]["application/json"]
    assert telemetry["schema"]["discriminator"]["propertyName"] == "kind"
    assert "next_cursor" in schemas["Page_Alert_"]["required"]


# -- CORS ----------------------------------------------------------------------------------


@pytest.fixture
async def cors_api(settings: Settings, quick_site: Site, clock: MovableClock) -> AsyncIterator[Api]:
    """The real app over the real service, with one browser app's origin allowed."""
    settings = settings.model_copy(update={"cors_origins": (APP,)})
    service = build(settings, quick_site, clock=clock, monotonic=clock.monotonic)
    app = create_app(service.http)
    async with run(service), LifespanManager(app, startup_timeout=20, shutdown_timeout=20):
        await wait_for(lambda: service.link.subscribed, what="subscription")
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 40000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://facilities.test"
        ) as http:
            yield Api(service, app, http)


def _preflight(origin: str, method: str, headers: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_a_configured_origin_passes_its_preflight_and_reads(cors_api: Api) -> None:
    _person, token = await cors_api.person(Role.STAFF)
    path = "/api/stations/cs-01/ports/1/power"
    answer = await cors_api.http.options(
        path, headers=_preflight(APP, "POST", "authorization,content-type")
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP
    assert "POST" in answer.headers["access-control-allow-methods"]
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    # the request itself: the answer names the origin, and exposes the contract's headers
    answer = await cors_api.http.get("/api/alerts", headers={"Origin": APP, **bearer(token)})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP
    exposed = answer.headers["access-control-expose-headers"].lower()
    assert {"retry-after", "www-authenticate", "idempotent-replayed"} <= {
        h.strip() for h in exposed.split(",")
    }


async def test_another_origin_is_not_allowed(cors_api: Api) -> None:
    answer = await cors_api.http.options(
        "/api/stations", headers=_preflight("https://evil.example.com", "GET", "authorization")
    )
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers
    answer = await cors_api.http.get(
        "/api/stations", headers={"Origin": "https://evil.example.com"}
    )
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


async def test_cors_is_off_by_default(api: Api) -> None:
    answer = await api.http.options(
        "/api/stations", headers=_preflight(APP, "GET", "authorization")
    )
    assert "access-control-allow-origin" not in answer.headers
    answer = await api.http.get("/api/stations", headers={"Origin": APP})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


def test_cors_origins_repeat_or_join_and_anything_else_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FACILITIES_CORS_ORIGIN", raising=False)
    argv = ["run", "--cors-origin", APP, "--cors-origin", "http://localhost:5173,https://b.example"]
    settings = from_arguments(build_parser().parse_args(argv), Settings)
    assert settings.cors_origins == (APP, "http://localhost:5173", "https://b.example")
    monkeypatch.setenv("FACILITIES_CORS_ORIGIN", APP)
    assert Settings().cors_origins == (APP,)
    # the command line replaces the environment's value, as for every option
    argv = ["run", "--cors-origin", "https://b.example"]
    assert from_arguments(build_parser().parse_args(argv), Settings).cors_origins == (
        "https://b.example",
    )
    for bad in ("app.example.org", "https://app.example.org/path", "ftp://x.example", "*"):
        with pytest.raises(UsageError, match="--cors-origin"):
            from_arguments(build_parser().parse_args(["run", "--cors-origin", bad]), Settings)
