"""An Idempotency-Key belongs to one request: reused for another gate it opens nothing."""

import asyncio
from collections.abc import Iterator

import pytest

from facilities.access import Role
from facilities.mosquitto import PrivateBroker
from tests.api_support import Api, bearer
from tests.support.db import query
from tests.support.poll import wait_for
from tests.test_api_gates import OPEN, Commands


@pytest.fixture
def commands(broker: PrivateBroker) -> Iterator[Commands]:
    observer = Commands(broker)
    yield observer
    observer.close()


async def _barrier(api: Api, commands: Commands, token: str, before: int) -> None:
    """One good open from the same service connection: every command sent before it has
    reached the observer when it has (one publisher's messages arrive in order)."""
    ok = await api.http.post(OPEN.format("g-cq4", "north"), headers=bearer(token))
    assert ok.status_code == 200, ok.text
    await wait_for(lambda: commands.count() > before, what="barrier command")
    assert commands.count() == before + 1, [c[1] for c in commands.seen]


async def test_a_key_reused_for_another_gate_is_409_and_opens_nothing(
    api: Api, gates, commands: Commands
) -> None:
    person, token = await api.person(Role.RESIDENT, "王阿姨", "g-cq4", "g-hc3")
    gates("g-cq4")
    gates("g-hc3")
    key = {"Idempotency-Key": "tap-1"}
    first = await api.http.post(OPEN.format("g-cq4", "north"), headers={**bearer(token), **key})
    assert first.status_code == 200, first.text
    # Before: 200 with the first gate's command id, and g-hc3's gate never got a command.
    for garage, gate in (("g-hc3", "north"), ("g-cq4", "south")):
        other = await api.http.post(OPEN.format(garage, gate), headers={**bearer(token), **key})
        assert other.status_code == 409, other.text
        assert other.json()["error"] == "conflict"
        assert "command_id" not in other.json()
    # the same request again is still a replay of the first answer
    again = await api.http.post(OPEN.format("g-cq4", "north"), headers={**bearer(token), **key})
    assert again.status_code == 200
    assert again.json() == first.json()
    await _barrier(api, commands, token, 1)
    rows = query(
        api.service.settings.db,
        "SELECT target, status, outcome, idempotency_key FROM api_requests ORDER BY id",
    )
    assert rows == [
        ("g-cq4/north", 200, "opened", "tap-1"),
        ("g-hc3/north", 409, "conflict", "tap-1"),
        ("g-cq4/south", 409, "conflict", "tap-1"),
        ("g-cq4/north", 200, "replayed", "tap-1"),
        ("g-cq4/north", 200, "opened", None),
    ]
    # docs/api.md: the audit log shows each request's Idempotency-Key
    staff = (await api.person(Role.STAFF, "物业"))[1]
    audit = (await api.http.get("/api/audit", headers=bearer(staff))).json()["items"]
    requests = [i for i in audit if i["kind"] == "request"]
    assert [(i["target"], i["idempotency_key"]) for i in requests] == [
        (target, key_) for target, _s, _o, key_ in rows
    ]
    assert all(i["who"] == person for i in requests)


async def test_a_key_in_flight_for_another_gate_is_409_and_opens_nothing(
    api: Api, gates, commands: Commands
) -> None:
    """Two taps with one key at the same moment on two gates: the first opens, the second
    does not wait for it and take its answer (before: both 200, one command)."""
    _person, token = await api.person(Role.RESIDENT, "李先生", "g-cq4", "g-hc3")
    gates("g-cq4")
    gates("g-hc3")
    headers = {**bearer(token), "Idempotency-Key": "tap-2"}
    answers = await asyncio.gather(
        api.http.post(OPEN.format("g-cq4", "south"), headers=headers),
        api.http.post(OPEN.format("g-hc3", "east"), headers=headers),
    )
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    await _barrier(api, commands, token, 1)
    opened = next(a for a in answers if a.status_code == 200)
    assert commands.seen[0][1]["id"] == opened.json()["command_id"]
