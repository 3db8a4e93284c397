"""Gate opening through the real app, the real broker and simulated gates (docs/api.md,
"Opening a gate")."""

import asyncio
import json
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from facilities.access import Role
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.commands import EXPIRES_MARGIN_S
from facilities.mqtt.session import BrokerUrl
from facilities.store.db import BUSY_TIMEOUT_MS
from simulators.devices import Behaviour
from tests.api_support import QUICK_TIMEOUT_S, Api, bearer
from tests.support.db import query
from tests.support.paths import EXAMPLE_SITE
from tests.support.poll import wait_for

GATE_COMMANDS = "facilities/garage/+/gate/+/command"
OPEN = "/api/garages/{}/gates/{}/open"


class Commands:
    """Every command the broker delivers on `topics` (gate commands unless told), seen by an
    MQTT 5 observer (so that the publish properties, such as the message expiry, are visible
    too)."""

    def __init__(self, broker: PrivateBroker, *topics: str) -> None:
        url = BrokerUrl.parse(broker.url(broker.new_user_like("observer")))
        self.seen: list[tuple[str, dict[str, Any], Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"observer-{uuid.uuid4().hex[:6]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.username_pw_set(url.username, url.password)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_args: self._subscribed.set()
        self._client.connect(url.host, url.port)
        self._client.loop_start()
        self._client.subscribe([(topic, 1) for topic in topics or (GATE_COMMANDS,)])
        assert self._subscribed.wait(5), "observer not subscribed"

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        if msg.retain:
            return  # what the broker kept from before this observer (an open alert)
        with self._lock:
            self.seen.append((msg.topic, json.loads(msg.payload), msg.properties))

    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@pytest.fixture
def commands(broker: PrivateBroker) -> Iterator[Commands]:
    observer = Commands(broker)
    yield observer
    observer.close()


@pytest.fixture
async def resident(api: Api) -> tuple[str, str]:
    return await api.person(Role.RESIDENT, "王阿姨", "g-cq4", "g-cq8", "g-hc3")


async def _nothing_sent_since(api: Api, commands: Commands, before: int, token: str) -> None:
    """No command reached the broker since `before` commands: a good open from the same
    service connection is the barrier (one publisher's messages arrive in order)."""
    ok = await api.http.post(OPEN.format("g-cq4", "north"), headers=bearer(token))
    assert ok.status_code == 200, ok.text
    await wait_for(lambda: commands.count() > before, what="barrier command")
    assert commands.count() == before + 1
    assert commands.seen[-1][1]["id"] == ok.json()["command_id"]


async def test_a_gate_that_acks_opens_and_everything_is_audited(
    api: Api, gates, commands: Commands, resident: tuple[str, str]
) -> None:
    person, token = resident
    garage = gates("g-cq4")
    response = await api.http.post(OPEN.format("g-cq4", "north"), headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "opened"
    # the gate and the observer are two subscribers: the broker may deliver to either first
    await wait_for(lambda: commands.count() >= 1, what="the open command seen by the observer")
    topic, command, properties = commands.seen[0]
    assert topic == "facilities/garage/g-cq4/gate/north/command"
    assert command["id"] == body["command_id"]
    assert (command["action"], command["resident"], command["reason"]) == ("open", person, "app")
    # a gate must never act on a late command: `expires` in the payload and MQTT 5 expiry
    assert command["expires"] == pytest.approx(command["ts"] + QUICK_TIMEOUT_S + EXPIRES_MARGIN_S)
    assert properties.MessageExpiryInterval == math.ceil(command["expires"] - command["ts"])
    assert [c.id for c in garage.commands] == [body["command_id"]]
    db = api.service.settings.db
    assert query(db, "SELECT requested_by, outcome FROM commands") == [(person, "acked")]
    assert query(
        db, "SELECT action, target, person, client, status, outcome FROM api_requests"
    ) == [("gate_open", "g-cq4/north", person, "203.0.113.7", 200, "opened")]
    metrics = (await api.http.get("/metrics")).text
    assert 'facilities_gate_open_requests_total{outcome="opened"} 1.0' in metrics
    assert 'facilities_commands_total{action="open",outcome="acked"} 1.0' in metrics
    assert 'facilities_command_roundtrip_seconds_count{action="open"} 1.0' in metrics
    assert (
        'facilities_http_requests_total{method="POST",'
        'route="/api/garages/{garage}/gates/{gate}/open",status="200"} 1.0'
    ) in metrics


async def test_a_gate_that_refuses_is_502_and_a_silent_one_504(
    api: Api, gates, commands: Commands, resident: tuple[str, str]
) -> None:
    _person, token = resident
    gates("g-cq8", Behaviour.REFUSE)
    gates("g-hc3", Behaviour.IGNORE)
    refused = await api.http.post(OPEN.format("g-cq8", "main"), headers=bearer(token))
    assert refused.status_code == 502
    assert refused.json()["error"] == "device_refused"
    assert "jammed" in refused.json()["detail"]
    silent = await api.http.post(OPEN.format("g-hc3", "east"), headers=bearer(token))
    assert silent.status_code == 504
    assert silent.json()["error"] == "device_timeout"
    # one try each: a second copy of an open would be a late open
    assert commands.count() == 2
    db = api.service.settings.db
    assert query(db, "SELECT target, status, outcome FROM api_requests ORDER BY id") == [
        ("g-cq8/main", 502, "device_refused"),
        ("g-hc3/east", 504, "device_timeout"),
    ]


@pytest.mark.parametrize(
    ("case", "path", "status", "error"),
    [
        ("no token", OPEN.format("g-cq4", "south"), 401, "unauthorized"),
        ("bad token", OPEN.format("g-cq4", "south"), 401, "unauthorized"),
        ("revoked token", OPEN.format("g-cq4", "south"), 401, "unauthorized"),
        ("another garage", OPEN.format("g-hc4", "main"), 403, "forbidden"),
        ("staff token", OPEN.format("g-cq4", "south"), 403, "forbidden"),
        ("unknown gate", OPEN.format("g-cq4", "west"), 404, "not_found"),
        ("unknown garage", OPEN.format("g-zz", "north"), 404, "not_found"),
    ],
)
async def test_refused_requests_send_nothing_and_are_audited(
    api: Api, gates, commands: Commands, resident, case, path, status, error
) -> None:
    _person, token = resident
    gates("g-cq4")
    headers: dict[str, str] = {}
    if case == "bad token":
        headers = bearer("not-a-token")
    elif case == "revoked token":
        revoked_id, revoked = await api.person(Role.RESIDENT, "moved away", "g-cq4")
        from facilities import admin

        await admin.revoke(api.service.settings.db, Role.RESIDENT, revoked_id)
        headers = bearer(revoked)
    elif case == "staff token":
        headers = bearer((await api.person(Role.STAFF, "物业"))[1])
    elif case != "no token":
        headers = bearer(token)
    response = await api.http.post(path, headers=headers)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert set(response.json()) >= {"error", "detail"}
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
    await _nothing_sent_since(api, commands, 0, token)
    db = api.service.settings.db
    rows = query(db, "SELECT status, outcome FROM api_requests ORDER BY id")
    if status == 401:
        # no valid token: counted per minute and client, written in a batch (docs/api.md)
        assert rows == [(200, "opened")]
        await api.service.refusal_writer.store()
        refused = query(db, "SELECT status, outcome, count FROM auth_refusals")
        assert refused == [(401, "unauthorized", 1)]
    else:
        assert rows == [(status, error), (200, "opened")]


async def test_a_replayed_idempotency_key_returns_the_first_answer_and_sends_nothing(
    api: Api, gates, commands: Commands, resident, clock
) -> None:
    _person, token = resident
    gates("g-cq4")
    headers = {**bearer(token), "Idempotency-Key": "tap-123"}
    first = await api.http.post(OPEN.format("g-cq4", "north"), headers=headers)
    again = await api.http.post(OPEN.format("g-cq4", "north"), headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    # the answer given again says so (a header the OpenAPI document declares); the first not
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    # two taps at the same moment: still one open
    both = await asyncio.gather(
        *(
            api.http.post(
                OPEN.format("g-cq4", "south"), headers={**bearer(token), "Idempotency-Key": "k2"}
            )
            for _ in range(2)
        )
    )
    assert both[0].json() == both[1].json()
    # another resident's identical key is another request
    _other, other_token = await api.person(Role.RESIDENT, "李先生", "g-cq4")
    theirs = await api.http.post(
        OPEN.format("g-cq4", "north"), headers={**bearer(other_token), "Idempotency-Key": "tap-123"}
    )
    assert theirs.json()["command_id"] != first.json()["command_id"]
    await _nothing_sent_since(api, commands, 3, token)
    outcomes = query(api.service.settings.db, "SELECT outcome FROM api_requests ORDER BY id")
    assert [o for (o,) in outcomes].count("replayed") == 2
    # the two taps at once: audited in the order they were answered, the open first
    k2 = query(
        api.service.settings.db,
        "SELECT outcome FROM api_requests WHERE idempotency_key = 'k2' ORDER BY at, id",
    )
    assert k2 == [("opened",), ("replayed",)]
    # a day later the key is forgotten: the same key opens again
    clock.advance(24 * 3600 + 1)
    later = await api.http.post(OPEN.format("g-cq4", "north"), headers=headers)
    assert later.status_code == 200
    assert later.json()["command_id"] != first.json()["command_id"]


async def test_opens_are_rate_limited_per_resident(
    api: Api, gates, commands: Commands, resident, clock
) -> None:
    _person, token = resident
    gates("g-cq4")
    for _ in range(5):
        assert (
            await api.http.post(OPEN.format("g-cq4", "north"), headers=bearer(token))
        ).status_code == 200
    limited = await api.http.post(OPEN.format("g-cq4", "north"), headers=bearer(token))
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    clock.advance(61)
    await _nothing_sent_since(api, commands, 5, token)


async def test_failed_authentications_are_rate_limited_per_address(
    api: Api, gates, resident, clock
) -> None:
    _person, token = resident
    gates("g-cq4")
    for _ in range(10):
        bad = await api.http.get("/api/me", headers=bearer("guess"))
        assert bad.status_code == 401
    blocked = await api.http.post(OPEN.format("g-cq4", "north"), headers=bearer("guess"))
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) >= 1
    # a valid token is served from the same address: only failures are limited
    assert (await api.http.get("/api/me", headers=bearer(token))).status_code == 200
    async with api.client("198.51.100.9") as elsewhere:
        assert (await elsewhere.get("/api/me", headers=bearer("guess"))).status_code == 401
    clock.advance(61)
    assert (await api.http.get("/api/me", headers=bearer("guess"))).status_code == 401


async def test_me_lists_the_garages_a_resident_may_open(api: Api, resident) -> None:
    person, token = resident
    me = (await api.http.get("/api/me", headers=bearer(token))).json()
    assert me["id"] == person
    assert me["role"] == "resident"
    assert [g["id"] for g in me["garages"]] == ["g-cq4", "g-cq8", "g-hc3"]
    assert me["garages"][0]["gates"] == ["north", "south"]
    assert me["garages"][0]["gate_names"] == [
        {"gate": "north", "name": "北门", "name_en": "North gate"},
        {"gate": "south", "name": "南门", "name_en": "South gate"},
    ]


@pytest.mark.slow
def test_the_command_line_adds_and_revokes_people(tmp_path) -> None:
    from tests.support.processes import run_cli

    db, site_file = tmp_path / "people.db", str(EXAMPLE_SITE)
    added = run_cli(
        "residents",
        "add",
        "--db",
        str(db),
        "--site",
        site_file,
        "--name",
        "张三",
        "--garage",
        "g-cq4",
    )
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert len(token) >= 40
    stored = query(db, "SELECT id, token_hash FROM people")
    assert len(stored) == 1
    assert token not in str(stored)  # only a hash is kept
    person = stored[0][0]
    listed = run_cli("residents", "list", "--db", str(db))
    assert f"{person}\tactive\t张三\tg-cq4" in listed.stdout
    assert run_cli("residents", "revoke", "--db", str(db), str(person)).returncode == 0
    assert "revoked" in run_cli("residents", "list", "--db", str(db)).stdout
    unknown = run_cli(
        "residents",
        "add",
        "--db",
        str(db),
        "--site",
        site_file,
        "--name",
        "x",
        "--garage",
        "g-nope",
    )
    assert unknown.returncode == 2
    assert "unknown garage g-nope" in unknown.stderr
    staff = run_cli("staff", "add", "--db", str(db), "--name", "物业 陈经理")
    assert staff.returncode == 0
    assert query(db, "SELECT role FROM people WHERE name = '物业 陈经理'") == [("staff",)]


@pytest.mark.slow
@pytest.mark.sqlite_only("the write lock of the database file")
async def test_a_gate_opens_and_is_answered_while_another_process_holds_the_database(
    api: Api, gates, resident: tuple[str, str]
) -> None:
    """The database cannot be written past its busy timeout (another process holds its write
    lock): the gate opens all the same, the resident is told so (not a 500), and the audit
    row is written once the lock is let go (docs/reliability.md)."""
    person, token = resident
    garage = gates("g-cq4")
    db = api.service.settings.db
    # taken in a thread: the service runs on this test's event loop (tests/test_health.py)
    locker = sqlite3.connect(db, isolation_level=None, timeout=30, check_same_thread=False)
    try:
        await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")
        asked_at = time.monotonic()
        answer = await api.http.post(
            OPEN.format("g-cq4", "north"), headers={**bearer(token), "Idempotency-Key": "tap-1"}
        )
        # answered while the lock is held, without waiting out the database's busy timeout
        assert time.monotonic() - asked_at < BUSY_TIMEOUT_MS / 1000
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "opened"
        assert [c.id for c in garage.commands] == [answer.json()["command_id"]]
        assert query(db, "SELECT count(*) FROM api_requests") == [(0,)]
        # the key is answered from memory until its answer can be stored: no second open
        again = await api.http.post(
            OPEN.format("g-cq4", "north"), headers={**bearer(token), "Idempotency-Key": "tap-1"}
        )
        assert again.status_code == 200, again.text
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert len(garage.commands) == 1
        # the audit rows' writes give up (the busy timeout): kept in memory meanwhile
        audit = api.service.requests.audit
        await wait_for(
            lambda: audit.faults.reason() is not None, timeout_s=15, what="the audit rows kept"
        )
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    await wait_for(
        lambda: (
            # in the order they were answered (a row kept in memory is written after others)
            query(db, "SELECT target, person, status, outcome FROM api_requests ORDER BY at, id")
            == [("g-cq4/north", person, 200, "opened"), ("g-cq4/north", person, 200, "replayed")]
        ),
        timeout_s=30,
        what="the audit rows written after the lock",
    )
