"""Refusals are cheap (issue 11, point 6, the HTTP half): requests without a valid token are
counted in metrics and audited as one row per minute, client, route and outcome, written in
a batch, not as a row and a synchronous commit each."""

import asyncio

import pytest

from facilities.access import Role
from facilities.refusals import OTHERS, Refusals
from tests.api_support import Api, bearer
from tests.support.clock import MovableClock
from tests.support.db import query

OPEN = "/api/garages/g-cq4/gates/north/open"
ROUTE = "POST /api/garages/{garage}/gates/{gate}/open"


@pytest.mark.slow
async def test_a_flood_of_bogus_requests_is_a_few_audit_rows(api: Api) -> None:
    db = api.service.settings.db
    statuses: list[int] = []
    for batch in range(20):
        answers = await asyncio.gather(
            *(api.http.post(OPEN, headers=bearer(f"guess-{batch}-{i}")) for i in range(100))
        )
        statuses += [a.status_code for a in answers]
    assert statuses.count(401) == 10
    assert statuses.count(429) == 1990
    assert query(db, "SELECT count(*) FROM api_requests") == [(0,)]  # no row, no commit each
    await api.service.refusal_writer.store()
    # a row per minute and outcome: two, or four when the flood crosses a minute's end
    assert query(db, "SELECT count(*) FROM auth_refusals")[0][0] in (2, 3, 4)
    rows = query(
        db,
        "SELECT client, route, status, outcome, sum(count) FROM auth_refusals"
        " GROUP BY client, route, status, outcome",
    )
    assert sorted(rows) == [
        ("203.0.113.7", ROUTE, 401, "unauthorized", 10),
        ("203.0.113.7", ROUTE, 429, "rate_limited", 1990),
    ]
    registry = api.service.metrics.registry
    for reason, count in (("unauthorized", 10), ("rate_limited", 1990)):
        assert registry.get_sample_value("facilities_http_refusals_total", {"reason": reason}) == (
            count
        )


async def test_staff_read_the_refusals_in_the_audit(api: Api, clock: MovableClock) -> None:
    for _ in range(3):
        assert (await api.http.get("/api/me")).status_code == 401
    await api.service.refusal_writer.store()
    assert (await api.http.get("/api/me", headers=bearer("guess"))).status_code == 401
    await api.service.refusal_writer.store()  # the same minute: added to its row
    clock.advance(30)
    _staff, token = await api.person(Role.STAFF, "物业 陈经理")
    async with api.client("198.51.100.20") as office:
        audit = (await office.get("/api/audit", headers=bearer(token))).json()["items"]
    refusals = [item for item in audit if item["kind"] == "refusals"]
    assert len(refusals) == 1
    (entry,) = refusals
    assert entry["client"] == "203.0.113.7"
    assert entry["target"] == "GET /api/me"
    assert entry["status"] == 401
    assert entry["outcome"] == "unauthorized"
    assert entry["who"] is None
    assert entry["detail"].startswith("4 in this minute")


async def test_the_audit_pages_past_a_refusals_entry(api: Api, clock: MovableClock) -> None:
    assert (await api.http.get("/api/me")).status_code == 401
    await api.service.refusal_writer.store()
    clock.advance(60)
    _staff, token = await api.person(Role.STAFF, "物业 陈经理")
    assert (await api.http.get("/api/me", headers=bearer("guess"))).status_code == 401
    await api.service.refusal_writer.store()  # the next minute: a second row
    kinds: list[str] = []
    path: str | None = "/api/audit?limit=1"
    async with api.client("198.51.100.20") as office:
        while path is not None:
            page = await office.get(path, headers=bearer(token))
            assert page.status_code == 200, page.text
            kinds += [item["kind"] for item in page.json()["items"]]
            path = page.json()["next"]
    assert kinds.count("refusals") == 2


def test_refusal_groups_are_bounded_whatever_the_addresses() -> None:
    now = [1_000_020.0]
    refusals = Refusals(clock=lambda: now[0], groups_kept=10)
    for i in range(1000):
        refusals.refused(f"2001:db8::{i:x}", "GET /api/me", 401, "unauthorized")
    assert refusals.pending == 11  # ten addresses and the rest together
    taken = refusals.take()
    assert sum(r.count for r in taken) == 1000
    assert [r.count for r in taken if r.client == OTHERS] == [990]
    assert {r.minute for r in taken} == {1_000_020.0 - 1_000_020.0 % 60}
    assert refusals.take() == []


async def test_a_token_holder_s_refusals_past_a_few_a_minute_are_counted_not_rows(
    api: Api,
) -> None:
    db = api.service.settings.db
    person, token = await api.person(Role.RESIDENT, "王阿姨", "g-cq4")
    foreign = "/api/garages/g-hc3/gates/north/open"  # not her garage: 403 each
    answers = await asyncio.gather(
        *(api.http.post(foreign, headers=bearer(token)) for _ in range(200))
    )
    assert {a.status_code for a in answers} == {403}
    await api.service.refusal_writer.store()
    assert query(db, "SELECT count(*) FROM api_requests") == [(10,)]  # a row each, at first
    rows = query(db, "SELECT person, route, status, outcome, count FROM auth_refusals")
    assert rows == [(person, ROUTE, 403, "forbidden", 190)]
