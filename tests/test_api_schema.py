"""Property-based run over the OpenAPI spec: whatever a client sends, no server error and
no response that breaks the documented schema, status codes or content types."""

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from facilities import admin
from facilities.access import Role
from facilities.app import Service
from facilities.http import create_app
from facilities.mosquitto import PrivateBroker
from facilities.settings import Settings
from facilities.site import Site, load_site
from tests.conftest import EXAMPLE_SITE
from tests.procs import ServiceProcess

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
# Bounded so that `make test` stays fast: ~15 operations x this many examples, per token.
EXAMPLES = 30


@pytest.fixture(scope="module")
def served(
    broker: PrivateBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """`facilities run` on the session broker; (base URL, a token per role)."""
    workdir = tmp_path_factory.mktemp("schema")
    site = workdir / "site.toml"
    # Commands that nobody answers fail fast (no device is simulated here).
    text = EXAMPLE_SITE.read_text("utf-8")
    site.write_text(
        text.replace("[rules]\n", "[rules]\ncommand_timeout_s = 0.2\ncommand_tries = 1\n", 1)
    )
    db = workdir / "facilities.db"
    tokens = {}
    for role, garages in ((Role.STAFF, ()), (Role.RESIDENT, ("g-cq4", "g-hc3"))):
        added = asyncio.run(
            admin.add(
                db, role, f"schema {role}", garages=garages, site=None if not garages else _site()
            )
        )
        tokens[role.value] = added.token
    process = ServiceProcess(
        broker,
        db,
        client_id=f"schema-{uuid.uuid4().hex[:6]}",
        log=workdir / "service.log",
        site=site,
        # the limits are tested elsewhere; here they would only hide the routes behind 429
        extra=("--opens-per-minute", "100000", "--auth-failures-per-minute", "100000"),
    ).start()
    try:
        yield f"http://127.0.0.1:{process.port}", tokens
    finally:
        process.terminate()


def _site() -> Site:
    return load_site(EXAMPLE_SITE)


# The spec the service serves, read from the app itself at collection time (nothing runs:
# building the app connects to nothing). The event stream never ends by design; it has its
# own tests (test_api_live.py).
schema = schemathesis.openapi.from_dict(create_app(Service(Settings(), _site())).openapi()).exclude(
    path="/api/events"
)


def _call(case, base: str, token: str) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, timeout=10
    )


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_staff_request_breaks_the_api(case, served) -> None:  # type: ignore[no-untyped-def]
    _call(case, served[0], served[1]["staff"])


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_resident_request_breaks_the_api(case, served) -> None:  # type: ignore[no-untyped-def]
    _call(case, served[0], served[1]["resident"])
