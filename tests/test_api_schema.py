"""Property-based run over the OpenAPI spec against `facilities run`: whatever a client
sends (valid requests, invalid ones, and chains that feed one answer's ids into the next
request), no server error, invalid data refused, and no response that breaks the documented
schema, status codes or content types."""

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from facilities import admin
from facilities.access import Role
from facilities.api.app import create_app
from facilities.mosquitto import PrivateBroker
from facilities.settings import Settings
from facilities.site import Site, load_site
from facilities.wiring import build
from tests.support.paths import EXAMPLE_SITE
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

# docs/api.md: the answers about a device (502 it refused, 503 no broker link, 504 it did not
# acknowledge) are 5xx by design; linked requests reach real station ports and gates that no
# simulator answers here. Any other 5xx (a 500 above all) is the service's own failure.
DEVICE_ANSWERS = {502: "device_refused", 503: "unavailable", 504: "device_timeout"}


def not_a_service_error(ctx, response, case) -> None:  # type: ignore[no-untyped-def]
    """No 5xx but the documented answers about a device."""
    if response.status_code < 500:
        return
    error = DEVICE_ANSWERS.get(response.status_code)
    if error is None or response.json().get("error") != error:
        raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")


CHECKS = [
    not_a_service_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
# Bounded so that `make test` stays fast: ~15 operations x this many examples, per token.
EXAMPLES = 30
# Stateful runs: scenarios of up to this many linked calls (an alert's id from the list fed
# to its acknowledgement, a station's id and port to its power, a garage's gate to its open).
SCENARIOS = 25
STEPS = 8


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
schema = schemathesis.openapi.from_dict(
    create_app(build(Settings(), _site()).http).openapi()
).exclude(path="/api/events")
# Valid requests and invalid ones (wrong types, out-of-range values, missing or extra fields),
# named here so that a change of schemathesis's default does not drop either. (Its
# `negative_data_rejection` check is not used: it counts the Authorization header, which every
# call here sets, and unknown query parameters, which the API ignores, as invalid data
# accepted; tests/security/test_input_ranges.py pins what must be refused.)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


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


@pytest.mark.parametrize("role", ["staff", "resident"])
def test_no_chain_of_requests_breaks_the_api(served, role: str) -> None:  # type: ignore[no-untyped-def]
    """The stateful phase: links between operations (inferred from the spec) feed what one
    answer names (ids, ports, gates) into the next request."""
    base, tokens = served
    headers = {"Authorization": f"Bearer {tokens[role]}"}
    found: list[tuple[str, int]] = []  # (operation, status) of every linked call

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case):  # type: ignore[no-untyped-def]
            return {"base_url": base, "headers": headers, "timeout": 10}

        def after_call(self, response, case) -> None:  # type: ignore[no-untyped-def]
            if case.path_parameters:
                found.append((case.operation.label, response.status_code))

        def validate_response(self, response, case, additional_checks=None, **kwargs):  # type: ignore[no-untyped-def]
            case.validate_response(response, checks=CHECKS, headers=headers)

    Workflow.run(
        settings=settings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    # the chains reached real stations, garages and gates, not only unknown ids (404)
    assert any(status != 404 for _operation, status in found), found
