"""The failed-authentication limit (issue 11, point 5): it cannot be bypassed with a
forged X-Forwarded-For, it never refuses a valid token, and concurrent failures all count."""

import asyncio

import httpx
import pytest

from facilities.access import Role
from tests.api_support import Api, bearer
from tests.security.conftest import Run
from tests.support.clock import MovableClock
from tests.support.db import query

OPEN = "/api/garages/g-cq4/gates/north/open"
LIMIT = 10  # the default --auth-failures-per-minute


def _audited_clients(db: object) -> set[str]:
    return {str(client) for (client,) in query(db, "SELECT client FROM auth_refusals")}  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_forged_x_forwarded_for_neither_escapes_the_limit_nor_reaches_the_audit(
    run_service: Run,
) -> None:
    service = run_service()
    with httpx.Client(base_url=f"http://127.0.0.1:{service.port}", timeout=5) as http:
        statuses = [
            http.post(
                OPEN, headers={**bearer("guess"), "X-Forwarded-For": f"198.51.100.{i} <b>"}
            ).status_code
            for i in range(LIMIT + 5)
        ]
    assert statuses == [401] * LIMIT + [429] * 5
    service.terminate()  # refusals are written in batches; the last at the stop
    assert _audited_clients(service.db) == {"127.0.0.1"}


@pytest.mark.slow
def test_a_trusted_proxy_is_believed_and_only_it(run_service: Run) -> None:
    service = run_service("--trusted-proxy", "127.0.0.1/32")
    with httpx.Client(base_url=f"http://127.0.0.1:{service.port}", timeout=5) as http:

        def attempt(forwarded: str) -> int:
            headers = {**bearer("guess"), "X-Forwarded-For": forwarded}
            return http.post(OPEN, headers=headers).status_code

        assert [attempt("198.51.100.1") for _ in range(LIMIT)] == [401] * LIMIT
        assert attempt("198.51.100.1") == 429
        assert attempt("203.0.113.5, 198.51.100.2") == 401  # the proxy appended .2: its client
        assert attempt("<script>alert(1)</script>") in (401, 429)
    service.terminate()
    clients = _audited_clients(service.db)
    assert {"198.51.100.1", "198.51.100.2"} <= clients
    assert not any("<" in client for client in clients), clients


@pytest.mark.slow
def test_the_trusted_proxy_option_takes_addresses_only() -> None:
    from tests.support.processes import run_cli

    done = run_cli("run", "--trusted-proxy", "proxy.local", "--connect-timeout", "1", timeout_s=20)
    assert done.returncode == 2
    assert "--trusted-proxy" in done.stderr


async def test_a_valid_token_is_never_refused_for_others_failures(
    api: Api, gates, clock: MovableClock
) -> None:
    _person, token = await api.person(Role.RESIDENT, "王阿姨", "g-cq4")
    gates("g-cq4")
    for _ in range(LIMIT):
        assert (await api.http.post(OPEN, headers=bearer("guess"))).status_code == 401
    assert (await api.http.post(OPEN, headers=bearer("guess"))).status_code == 429
    assert (await api.http.get("/api/me")).status_code == 429  # no token is a failure too
    # the same address (one proxy, one office), a valid token: served
    assert (await api.http.get("/api/me", headers=bearer(token))).status_code == 200
    opened = await api.http.post(OPEN, headers=bearer(token))
    assert opened.status_code == 200, opened.text
    clock.advance(61)
    assert (await api.http.post(OPEN, headers=bearer("guess"))).status_code == 401


async def test_concurrent_failures_all_count(api: Api) -> None:
    answers = await asyncio.gather(
        *(api.http.get("/api/me", headers=bearer(f"guess-{i}")) for i in range(100))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [401] * LIMIT + [429] * (100 - LIMIT)
