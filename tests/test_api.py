"""The HTTP API through the real ASGI app and lifespan: public status from the live state,
staff operations, history, and clear errors for whatever a client sends."""

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest

from facilities import admin
from facilities.access import Role
from tests.api_support import Api, bearer
from tests.support.db import query
from tests.support.payloads import port, telemetry
from tests.support.poll import wait_for

API_PATHS = {
    "/api/communities",
    "/api/stations",
    "/api/stations/{station_id}",
    "/api/garages",
    "/api/garages/{garage_id}",
    "/healthz",
    "/metrics",
    "/api/events",
    "/api/garages/{garage_id}/gates/{gate_id}/open",
    "/api/me",
    "/api/alerts",
    "/api/alerts/{alert_id}/ack",
    "/api/stations/{station_id}/ports/{port}/power",
    "/api/stations/{station_id}/sessions",
    "/api/stations/{station_id}/telemetry",
    "/api/audit",
    "/api/cutoffs",
    "/api/quarantine",
}


async def _seen(api: Api, station: str, seq: int) -> None:
    """Wait until the service has stored message `seq` of `station`."""
    db = api.service.settings.db
    await wait_for(
        lambda: (
            query(db, "SELECT 1 FROM station_samples WHERE station = ? AND seq = ?", station, seq)
            != []
        ),
        what=f"{station} message {seq} stored",
    )


async def test_status_answers_from_the_live_state(api: Api, stations, device) -> None:
    cs = stations("cs-01")
    cs.publish_raw(
        telemetry(1, [port(1, "charging", energy_wh=120.0)] + [port(n) for n in range(2, 11)])
    )
    garage = device("g-cq4")
    garage.publish_raw(
        "facilities/garage/g-cq4/telemetry",
        json.dumps({"seq": 1, "ts": time.time(), "occupancy": 120}),
    )
    garage.publish_raw(
        "facilities/garage/g-cq4/gate/north/event",
        json.dumps({"seq": 1, "ts": time.time(), "type": "opened"}),
    )
    await _seen(api, "cs-01", 1)
    db = api.service.settings.db
    await wait_for(lambda: query(db, "SELECT count(*) FROM gate_events") == [(1,)], what="gate")

    one = (await api.http.get("/api/stations/cs-01")).json()
    assert (one["online"], one["ports_total"], one["ports_free"]) == (True, 10, 9)
    first = one["ports"][0]
    assert (first["state"], first["free"], first["power_w"], first["energy_wh"]) == (
        "charging",
        False,
        180.0,
        120.0,
    )
    estimate = datetime.fromisoformat(first["free_estimate_at"])
    assert estimate > datetime.now(UTC)
    assert one["ports"][1]["state"] == "idle"
    assert one["ports"][1]["free"] is True
    assert one["ports"][1]["free_estimate_at"] is None
    assert first["since"].endswith("Z")

    listed = {s["id"]: s for s in (await api.http.get("/api/stations")).json()}
    assert len(listed) == 20
    assert {k: listed["cs-01"][k] for k in ("online", "ports_free", "power_w")} == {
        "online": True,
        "ports_free": 9,
        "power_w": 180.0,
    }
    assert listed["cs-02"]["online"] is False  # never heard from: not shown as free
    assert listed["cs-02"]["ports_free"] == 0

    garages = {g["id"]: g for g in (await api.http.get("/api/garages")).json()}
    assert garages["g-cq4"] | {"last_seen": None} == {
        "id": "g-cq4",
        "community": "cq4",
        "name": api.service.site.garages["g-cq4"].name,
        "name_en": api.service.site.garages["g-cq4"].name_en,
        "online": True,
        "capacity": 120,
        "occupancy": 120,
        "free": 0,
        "full": True,
        "last_seen": None,
        "smoke_alert": False,
    }
    assert garages["g-cq8"]["free"] is None  # no occupancy reported yet
    detail = (await api.http.get("/api/garages/g-cq4")).json()
    north = next(g for g in detail["gates"] if g["gate"] == "north")
    assert (north["open"], north["last_event"]) == (True, "opened")
    names = [(g["gate"], g["name"], g["name_en"]) for g in detail["gates"]]
    assert names == [("north", "北门", "North gate"), ("south", "南门", "South gate")]

    communities = {c["id"]: c for c in (await api.http.get("/api/communities")).json()}
    cq4 = communities["cq4"]
    mine = [s for s in listed.values() if s["community"] == "cq4"]
    assert cq4["ports_free"] == sum(s["ports_free"] for s in mine)
    assert cq4["ports_total"] == sum(s["ports_total"] for s in mine)
    assert cq4["garages"] == ["g-cq4"]
    assert cq4["free_bays"] == 0


async def test_staff_see_acknowledge_and_act_on_alerts(api: Api, stations) -> None:
    staff_id, staff = await api.person(Role.STAFF, "物业 陈经理")
    cs = stations("cs-07")
    cs.publish_raw(telemetry(1, [port(2, "charging", temp_c=65.0)]))
    db = api.service.settings.db
    await wait_for(
        lambda: (
            query(db, "SELECT outcome FROM commands WHERE reason = 'port_over_temperature'")
            == [("acked",)]
        ),
        what="the rules cut port 2",
    )
    page = (await api.http.get("/api/alerts?state=active", headers=bearer(staff))).json()
    assert page["next"] is None
    (alert,) = page["items"]
    assert (alert["rule"], alert["subject"], alert["severity"]) == (
        "port_over_temperature",
        "cs-07/2",
        "critical",
    )
    assert [(a["action"], a["target"], a["outcome"]) for a in alert["actions"]] == [
        ("power_off", "cs-07/2", "acked")
    ]
    await wait_for(
        lambda: (
            api.service.live.read(lambda e: e.stations["cs-07"].ports[2].state.value) == "disabled"
        ),
        what="port 2 reported disabled",
    )
    metrics = (await api.http.get("/metrics")).text
    labels = '{rule="port_over_temperature",severity="critical"}'
    assert f"facilities_alerts_raised_total{labels} 1.0" in metrics
    assert f"facilities_alerts_open{labels} 1.0" in metrics
    assert 'facilities_port_state{port="2",state="disabled",station="cs-07"} 1.0' in metrics
    power_on = {"on": True}
    path = "/api/stations/cs-07/ports/2/power"
    refused = await api.http.post(path, json=power_on, headers=bearer(staff))
    assert refused.status_code == 409
    assert "port_over_temperature" in refused.json()["detail"]

    acked = await api.http.post(f"/api/alerts/{alert['id']}/ack", headers=bearer(staff))
    assert acked.status_code == 200
    assert (acked.json()["state"], acked.json()["acknowledged_by"]) == ("acknowledged", staff_id)
    again = await api.http.post(f"/api/alerts/{alert['id']}/ack", headers=bearer(staff))
    assert again.status_code == 200  # acknowledging twice changes nothing
    await wait_for(
        lambda: (
            query(db, "SELECT state, acknowledged_by FROM alerts") == [("acknowledged", staff_id)]
        ),
        what="acknowledgement stored",
    )
    filtered = await api.http.get(
        "/api/alerts?state=acknowledged&severity=critical", headers=bearer(staff)
    )
    assert [a["id"] for a in filtered.json()["items"]] == [alert["id"]]
    assert (await api.http.get("/api/alerts?state=cleared", headers=bearer(staff))).json()[
        "items"
    ] == []

    on = await api.http.post(path, json=power_on, headers=bearer(staff))
    assert on.status_code == 200, on.text
    assert on.json()["status"] == "done"
    assert any(c.action.value == "power_on" and c.port == 2 for c in cs.commands)

    log = (await api.http.get("/api/audit", headers=bearer(staff))).json()["items"]
    assert [(e["kind"], e["action"], e["who"], e["outcome"]) for e in log] == [
        ("command", "power_off", "rules", "acked"),
        ("request", "port_power", staff_id, "conflict"),
        ("command", "power_on", staff_id, "acked"),
        ("request", "port_power", staff_id, "acked"),
    ]
    assert [e["status"] for e in log if e["kind"] == "request"] == [409, 200]


async def test_an_acknowledgement_names_who_made_it(api: Api, stations) -> None:
    """The console shows who acknowledged by name: the answer and the list carry the staff
    member's name beside the id, also after the token is revoked; a person since removed
    (the demo's own, made again) keeps only the id."""
    first_id, first = await api.person(Role.STAFF, "物业 陈经理")
    _second_id, second = await api.person(Role.STAFF, "物业 李师傅")
    stations("cs-05").publish_raw(telemetry(1, [port(4, "charging", temp_c=65.0)]))
    alerts = "/api/alerts?state=active"

    async def raised() -> list[dict[str, object]]:
        return list((await api.http.get(alerts, headers=bearer(first))).json()["items"])

    (alert,) = await wait_for(raised, what="the port's alert")
    assert (alert["acknowledged_by"], alert["acknowledged_by_name"]) == (None, None)
    acked = (await api.http.post(f"/api/alerts/{alert['id']}/ack", headers=bearer(first))).json()
    assert (acked["acknowledged_by"], acked["acknowledged_by_name"]) == (first_id, "物业 陈经理")
    # someone else asking again is told who it was
    again = (await api.http.post(f"/api/alerts/{alert['id']}/ack", headers=bearer(second))).json()
    assert (again["acknowledged_by"], again["acknowledged_by_name"]) == (first_id, "物业 陈经理")
    db = api.service.settings.db
    await wait_for(
        lambda: query(db, "SELECT acknowledged_by FROM alerts") == [(first_id,)],
        what="the acknowledgement stored",
    )
    listed = "/api/alerts?state=acknowledged"

    async def shown() -> tuple[object, object]:
        (item,) = (await api.http.get(listed, headers=bearer(second))).json()["items"]
        return item["acknowledged_by"], item["acknowledged_by_name"]

    assert await shown() == (first_id, "物业 陈经理")
    await admin.revoke(db, Role.STAFF, first_id)
    assert await shown() == (first_id, "物业 陈经理")  # revoked: what they did stays theirs
    await admin.add(db, Role.STAFF, "物业 陈经理", replacing=True)
    assert await shown() == (first_id, None)


async def test_staff_routes_refuse_residents_and_strangers(api: Api) -> None:
    _rid, resident = await api.person(Role.RESIDENT, "王阿姨", "g-cq4")
    for path in ("/api/alerts", "/api/audit", "/api/stations/cs-01/sessions"):
        assert (await api.http.get(path)).status_code == 401
        forbidden = await api.http.get(path, headers=bearer(resident))
        assert forbidden.status_code == 403
        assert forbidden.json() == {"error": "forbidden", "detail": "staff only"}
    basic = await api.http.get("/api/alerts", headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401


async def test_unknown_alert_is_404(api: Api) -> None:
    _sid, staff = await api.person(Role.STAFF, "s")
    response = await api.http.post("/api/alerts/nope/ack", headers=bearer(staff))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_sessions_and_telemetry_history(api: Api, device) -> None:
    _sid, staff = await api.person(Role.STAFF, "s")
    cs = device("cs-03")
    t0 = time.time() - 120
    powers = [100.0, 200.0, 300.0, 400.0, 500.0]
    for i, power in enumerate(powers):
        cs.publish_raw(
            "facilities/charging/cs-03/telemetry",
            json.dumps(
                telemetry(
                    i + 1,
                    [port(1, "charging", power_w=power, energy_wh=10.0 * i), port(2)],
                    ts=t0 + 10 * i,
                )
            ),
        )
    cs.publish_raw(
        "facilities/charging/cs-03/telemetry",
        json.dumps(telemetry(6, [port(1), port(2)], ts=t0 + 50)),
    )
    await _seen(api, "cs-03", 6)
    db = api.service.settings.db
    await wait_for(
        lambda: query(db, "SELECT count(*) FROM charging_sessions") == [(1,)], what="session"
    )

    sessions = (await api.http.get("/api/stations/cs-03/sessions", headers=bearer(staff))).json()
    (session,) = sessions["items"]
    assert (session["port"], session["end_reason"], session["peak_w"], session["energy_wh"]) == (
        1,
        "unplug",
        500.0,
        40.0,
    )

    base = "/api/stations/cs-03/telemetry"
    raw = (await api.http.get(base, headers=bearer(staff))).json()
    assert [item["seq"] for item in raw["items"]] == [1, 2, 3, 4, 5, 6]
    assert raw["items"][0]["ts"] == datetime.fromtimestamp(t0, UTC).isoformat().replace(
        "+00:00", "Z"
    )
    assert [p["port"] for p in raw["items"][0]["ports"]] == [1, 2]
    only = (await api.http.get(f"{base}?port=1", headers=bearer(staff))).json()
    assert all([p["port"] for p in item["ports"]] == [1] for item in only["items"])

    first = (await api.http.get(f"{base}?limit=4", headers=bearer(staff))).json()
    assert [i["seq"] for i in first["items"]] == [1, 2, 3, 4]
    assert first["next"].startswith("/api/stations/cs-03/telemetry?")
    assert first["kind"] == "raw"
    rest = (await api.http.get(first["next"], headers=bearer(staff))).json()
    assert [i["seq"] for i in rest["items"]] == [5, 6]
    assert rest["next"] is None
    assert rest["next_cursor"] is None
    # `next_cursor` is the cursor of `next`: a client building its own query gets the same page
    built = await api.http.get(
        base, params={"limit": 4, "cursor": first["next_cursor"]}, headers=bearer(staff)
    )
    assert built.json() == rest

    step = 30.0
    buckets = (await api.http.get(f"{base}?step={step}&port=1", headers=bearer(staff))).json()
    assert buckets["kind"] == "buckets"
    expected: dict[int, list[float]] = {}
    for i, power in enumerate([*powers, 0.0]):
        expected.setdefault(int((t0 + 10 * i) // step), []).append(power)
    assert [(b["samples"], b["avg_power_w"], b["max_power_w"]) for b in buckets["items"]] == [
        (len(v), pytest.approx(sum(v) / len(v)), max(v)) for v in expected.values()
    ]
    assert buckets["items"][-1]["last_state"] == "idle"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/api/stations/cs-99", None, 404),
        ("GET", "/api/garages/nope", None, 404),
        ("GET", "/api/nothing-here", None, 404),
        ("DELETE", "/api/stations", None, 405),
        ("GET", "/api/alerts?limit=0", None, 422),
        ("GET", "/api/alerts?limit=5001", None, 422),
        ("GET", "/api/alerts?state=burning", None, 422),
        ("GET", "/api/alerts?cursor=garbage", None, 422),
        ("GET", "/api/alerts?since=yesterday", None, 422),
        ("GET", "/api/audit?cursor=1,2", None, 422),
        ("GET", "/api/stations/cs-01/telemetry?step=0", None, 422),
        ("GET", "/api/stations/cs-01/telemetry?cursor=x,y", None, 422),
        ("GET", "/api/stations/cs-01/telemetry?from=not-a-time", None, 422),
        ("GET", "/api/stations/cs-99/telemetry", None, 404),
        ("POST", "/api/stations/cs-01/ports/2/power", {"on": "maybe"}, 422),
        ("POST", "/api/stations/cs-01/ports/2/power", {"on": True, "force": 1}, 422),
        ("POST", "/api/stations/cs-01/ports/99/power", {"on": False}, 422),
        ("POST", "/api/stations/cs-01/ports/11/power", {"on": False}, 404),
        ("POST", "/api/stations/cs-01/ports/2/power", "not json", 422),
    ],
)
async def test_every_client_mistake_is_a_json_error(api: Api, method, path, body, status) -> None:
    _sid, staff = await api.person(Role.STAFF, "s")
    kwargs: dict[str, object] = {"headers": bearer(staff)}
    if isinstance(body, str):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    response = await api.http.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error", "detail"}


async def test_docs_work_offline_and_document_every_path(api: Api) -> None:
    page = await api.http.get("/docs")
    assert page.status_code == 200
    assert "/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    assert "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        response = await api.http.get(f"/docs-assets/{asset}")
        assert response.status_code == 200
        assert len(response.content) > 10_000
    spec = (await api.http.get("/openapi.json")).json()
    assert set(spec["paths"]) == API_PATHS
    assert "bearer" in str(spec["components"]["securitySchemes"]).lower()


async def test_a_token_added_while_running_works_at_once(api: Api) -> None:
    from tests.support.processes import run_cli

    # the command line in a thread: the service shares this event loop and must go on
    db = str(api.service.settings.db)
    added = await asyncio.to_thread(run_cli, "staff", "add", "--db", db, "--name", "夜班")
    token = added.stdout.strip().splitlines()[-1]
    me = await api.http.get("/api/me", headers=bearer(token))
    assert me.status_code == 200
    assert me.json()["role"] == "staff"
    person = me.json()["id"]
    revoked = await asyncio.to_thread(run_cli, "staff", "revoke", "--db", db, person)
    assert revoked.returncode == 0
    assert (await api.http.get("/api/me", headers=bearer(token))).status_code == 401


@pytest.mark.sqlite_only("the write lock of the database file")
async def test_healthz_is_503_while_the_database_does_not_answer(api: Api, device) -> None:
    """Another process holds the write lock: the batch in hand waits (busy_timeout 5 s), the
    database stops answering, /healthz says so; the lock goes, everything is stored."""
    import sqlite3

    db = api.service.settings.db
    assert (await api.http.get("/healthz")).status_code == 200
    # Taken in a thread: the service runs on this test's event loop, and a transaction it has
    # open must be able to finish (blocking the loop here held both sides until the timeout).
    locker = sqlite3.connect(db, isolation_level=None, timeout=30, check_same_thread=False)
    try:
        await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")
        device("cs-09").publish_raw(
            "facilities/charging/cs-09/telemetry", json.dumps(telemetry(1, [port(1)]))
        )
        await wait_for(
            lambda: (
                api.service.live.read(lambda e: e.stations["cs-09"].last_seen is not None)
                and api.service.ingest.waiting == 0
            ),
            what="the message received and taken into a batch (which now waits for the lock)",
        )
        for _ in range(3):  # each answer takes the 1 s health timeout once the writer waits
            response = await api.http.get("/healthz")
            if response.status_code == 503:
                break
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
        assert "database not answering" in response.json()["detail"]
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    await _seen(api, "cs-09", 1)
    assert (await api.http.get("/healthz")).status_code == 200
