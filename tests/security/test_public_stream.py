"""The public live stream carries only public data: anonymous (and residents') SSE and
WebSocket clients get an alert's public form, as `GET /api/stations/{id}` shows it; staff
get the full form with their token. Over a real uvicorn and the real broker."""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from facilities import admin
from facilities.access import Role
from facilities.settings import Settings
from facilities.site import Site
from tests.api_support import bearer
from tests.support.payloads import port, telemetry
from tests.support.poll import wait_for
from tests.test_api_live import WITHIN_S, Live, _serve, _sse_events

# What the public GETs show of an alert (a station's or garage's `alerts`), and the change.
PUBLIC = {"id", "rule", "subject", "severity", "state", "change"}
Events = asyncio.Queue[tuple[str, dict[str, Any]]]


async def _alert(events: Events, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + WITHIN_S
    while True:
        kind, data = await asyncio.wait_for(events.get(), deadline - time.monotonic())
        if kind == "alert" and data["subject"] == "cs-04" and data["state"] == state:
            return data


@contextlib.asynccontextmanager
async def _sse(live: Live, headers: dict[str, str]) -> AsyncIterator[Events]:
    events: Events = asyncio.Queue()
    async with (
        httpx.AsyncClient(base_url=live.base, timeout=10) as http,
        http.stream("GET", "/api/events", headers=headers) as response,
    ):
        assert response.status_code == 200
        reader = asyncio.create_task(_sse_events(response, events))
        try:
            yield events
        finally:
            reader.cancel()


@contextlib.asynccontextmanager
async def _ws(live: Live, headers: dict[str, str]) -> AsyncIterator[Events]:
    events: Events = asyncio.Queue()
    url = live.base.replace("http://", "ws://") + "/api/ws"

    async def read(ws: websockets.ClientConnection) -> None:
        async for raw in ws:
            message = json.loads(raw)
            await events.put((message["event"], message["data"]))

    async with websockets.connect(url, open_timeout=5, additional_headers=headers) as ws:
        reader = asyncio.create_task(read(ws))
        try:
            yield events
        finally:
            reader.cancel()


async def test_anonymous_streams_carry_only_the_public_form_of_alerts(
    settings: Settings, site: Site, device
) -> None:
    async with _serve(settings, site, 1000) as live:
        added = await admin.add(settings.db, Role.STAFF, "物业")
        staff_id, staff = added.person.id, added.token
        resident = (
            await admin.add(settings.db, Role.RESIDENT, "王阿姨", garages=("g-cq4",), site=site)
        ).token
        async with (
            _sse(live, {}) as anonymous_sse,
            _ws(live, {}) as anonymous_ws,
            _sse(live, bearer(resident)) as resident_sse,
            _sse(live, bearer(staff)) as staff_sse,
            _ws(live, bearer(staff)) as staff_ws,
        ):
            await wait_for(lambda: live.feed.subscribers == 5, what="five subscribers")
            cs = device("cs-04")
            cs.publish_raw(
                "facilities/charging/cs-04/telemetry",
                json.dumps(telemetry(1, [port(3, "charging")], leakage_ma=40.0)),
            )
            raised = await _alert(staff_sse, "active")
            async with httpx.AsyncClient(base_url=live.base, timeout=10) as http:
                acked = await http.post(f"/api/alerts/{raised['id']}/ack", headers=bearer(staff))
            assert acked.status_code == 200, acked.text
            for events in (staff_sse, staff_ws):
                full = await _alert(events, "acknowledged")
                assert full["acknowledged_by"] == staff_id
                assert full["value"] == 40.0
                assert "actions" in full
            for events in (anonymous_sse, anonymous_ws, resident_sse):
                for state in ("active", "acknowledged"):
                    public = await _alert(events, state)
                    # before: the staff form, with who acknowledged, values and actions
                    assert set(public) == PUBLIC, public
                    assert public["id"] == raised["id"]
                    assert public["rule"] == "leakage"


async def test_a_bad_token_on_the_stream_is_refused(settings: Settings, site: Site) -> None:
    async with _serve(settings, site, 1000) as live:
        async with httpx.AsyncClient(base_url=live.base, timeout=10) as http:
            refused = await http.get("/api/events", headers=bearer("not-a-token"))
        assert refused.status_code == 401
        assert refused.json()["error"] == "unauthorized"
        url = live.base.replace("http://", "ws://") + "/api/ws"
        with pytest.raises(websockets.InvalidStatus) as refusal:
            async with websockets.connect(
                url, open_timeout=5, additional_headers=bearer("not-a-token")
            ):
                pass
        assert refusal.value.response.status_code == 403
        assert live.feed.subscribers == 0
