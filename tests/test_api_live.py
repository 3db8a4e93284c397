"""The live stream over a real HTTP server: server-sent events, WebSocket, slow clients."""

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
import websockets
from pydantic import TypeAdapter

from facilities import admin
from facilities.access import Role
from facilities.api.app import create_app
from facilities.api.events_models import AlertEvent, AlertEventPublic, LiveEvent
from facilities.api.live import LiveFeed
from facilities.server import bind, serve_http
from facilities.service import Service, run
from facilities.settings import Listen, Settings
from facilities.site import Site
from facilities.wiring import build
from tests.api_support import bearer
from tests.support.clock import MovableClock
from tests.support.db import query
from tests.support.payloads import port, telemetry
from tests.support.poll import wait_for

LIVE_EVENT: TypeAdapter[LiveEvent] = TypeAdapter(LiveEvent)
# docs/pages.md, "Live": a change reaches a live page within 2 s.
WITHIN_S = 2.0


@dataclass
class Live:
    service: Service
    feed: LiveFeed
    base: str
    stop: asyncio.Event
    server: "asyncio.Task[None]"


@contextlib.asynccontextmanager
async def _serve(
    settings: Settings, site: Site, live_queue: int, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[Live]:
    service = build(settings, site, clock=clock, live_queue=live_queue)
    sock = bind(Listen("127.0.0.1", 0))
    stop, started = asyncio.Event(), asyncio.Event()
    async with run(service):
        await wait_for(lambda: service.link.subscribed, what="subscription")
        app = create_app(service.http)
        server = asyncio.create_task(serve_http(service, sock, stop, started=started, app=app))
        await asyncio.wait_for(started.wait(), 10)
        host, port_number = sock.getsockname()[:2]
        try:
            yield Live(service, service.feed, f"http://{host}:{port_number}", stop, server)
        finally:
            stop.set()
            await server
            sock.close()


@pytest.fixture
async def live(settings: Settings, site: Site) -> AsyncIterator[Live]:
    async with _serve(settings, site, live_queue=1000) as running:
        yield running


async def _sse_events(response: httpx.Response, into: asyncio.Queue[tuple[str, dict]]) -> None:
    kind = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind:
            await into.put((kind, json.loads(line.removeprefix("data: "))))


async def _next(events: asyncio.Queue[tuple[str, dict]], kind: str, device: str) -> dict:
    deadline = time.monotonic() + WITHIN_S
    while True:
        got_kind, data = await asyncio.wait_for(events.get(), deadline - time.monotonic())
        if got_kind == kind and data["subject" if kind == "alert" else "id"] == device:
            return data


async def test_server_sent_events_carry_state_changes_and_alerts(live: Live, device) -> None:
    cs = device("cs-04")
    events: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
    async with (
        httpx.AsyncClient(base_url=live.base, timeout=10) as http,
        http.stream("GET", "/api/events") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = asyncio.create_task(_sse_events(response, events))
        await wait_for(lambda: live.feed.subscribers == 1, what="subscribed")
        try:
            started = time.monotonic()
            cs.publish_raw(
                "facilities/charging/cs-04/telemetry",
                json.dumps(telemetry(1, [port(3, "charging")])),
            )
            station = await _next(events, "station", "cs-04")
            assert time.monotonic() - started < WITHIN_S
            assert station["ports"][2]["state"] == "charging"
            assert station["ports_free"] == 0  # the other ports have not reported yet
            cs.publish_raw(
                "facilities/charging/cs-04/telemetry",
                json.dumps(telemetry(2, [port(3, "charging")], leakage_ma=40.0)),
            )
            alert = await _next(events, "alert", "cs-04")
            assert (alert["rule"], alert["state"]) == ("leakage", "active")
        finally:
            reader.cancel()


async def test_a_stream_is_subscribed_before_its_client_sees_it_open(live: Live) -> None:
    """A browser's EventSource is open once the headers come: a change right after must be
    heard, so the subscription is made before the headers go out, each time."""
    async with httpx.AsyncClient(base_url=live.base, timeout=10) as http:
        for opened in range(1, 6):
            async with http.stream("GET", "/api/events") as response:
                assert response.status_code == 200
                assert live.feed.subscribers == 1, f"stream {opened}: headers before subscribing"
            await wait_for(lambda: live.feed.subscribers == 0, what="unsubscribed on close")


async def test_a_garage_s_smoke_warning_follows_its_alert_not_only_its_messages(
    settings: Settings, site: Site, device
) -> None:
    """The residents' pages show a garage's smoke warning until its alert clears, which
    happens on the service's clock with no message from the garage: the stream says so."""
    clock = MovableClock()
    garage = device("g-hc3")

    def report(seq: int, *, smoke: bool) -> None:
        body = {"seq": seq, "ts": clock(), "occupancy": 30, "smoke": smoke}
        garage.publish_raw("facilities/garage/g-hc3/telemetry", json.dumps(body))

    async def garage_event(events: asyncio.Queue[tuple[str, dict]], **expected: object) -> dict:
        deadline = time.monotonic() + WITHIN_S
        while True:
            kind, data = await asyncio.wait_for(events.get(), deadline - time.monotonic())
            wanted = kind == "garage" and data["id"] == "g-hc3"
            if wanted and all(data[k] == v for k, v in expected.items()):
                return data

    events: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
    async with (
        _serve(settings, site, 1000, clock=clock) as live,
        httpx.AsyncClient(base_url=live.base, timeout=10) as http,
        http.stream("GET", "/api/events") as response,
    ):
        reader = asyncio.create_task(_sse_events(response, events))
        await wait_for(lambda: live.feed.subscribers == 1, what="subscribed")
        try:
            report(1, smoke=True)
            await garage_event(events, smoke=True, smoke_alert=True)
            report(2, smoke=False)
            await garage_event(events, smoke=False, smoke_alert=True)  # held until it clears
            clock.advance(61)  # `clear_after_s` (60 s) without smoke: the alert clears
            cleared = await garage_event(events, smoke_alert=False)
            smoke = [a["state"] for a in cleared["alerts"] if a["rule"] == "smoke"]
            assert smoke in ([], ["cleared"])
        finally:
            reader.cancel()


async def test_the_websocket_carries_the_same_events(live: Live, device) -> None:
    cs = device("cs-05")
    url = live.base.replace("http://", "ws://") + "/api/ws"
    async with websockets.connect(url, open_timeout=5) as ws:
        await wait_for(lambda: live.feed.subscribers == 1, what="subscribed")
        cs.publish_raw(
            "facilities/charging/cs-05/telemetry",
            json.dumps(telemetry(1, [port(n) for n in range(1, 11)])),
        )
        message = json.loads(await asyncio.wait_for(ws.recv(), WITHIN_S))
        assert message["event"] == "station"
        assert message["data"]["id"] == "cs-05"
        assert message["data"]["ports_free"] == 10
    await wait_for(lambda: live.feed.subscribers == 0, what="unsubscribed on close")


@pytest.mark.slow
async def test_a_client_that_does_not_read_is_dropped_and_never_slows_ingest(
    settings: Settings, site: Site, device
) -> None:
    async with _serve(settings, site, live_queue=20) as running:
        host, port_number = running.base.removeprefix("http://").split(":")
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect((host, int(port_number)))
        stuck.sendall(b"GET /api/events HTTP/1.1\r\nHost: facilities\r\n\r\n")
        try:
            await wait_for(lambda: running.feed.subscribers == 1, what="stuck client subscribed")
            cs = device("cs-06")
            flips = 2000  # ~4 MB of events: far more than socket buffers hold
            for seq in range(1, flips + 1):
                state = "charging" if seq % 2 else "idle"
                cs.publish_raw(
                    "facilities/charging/cs-06/telemetry",
                    json.dumps(telemetry(seq, [port(1, state)])),
                )
            db = running.service.settings.db
            await wait_for(
                lambda: query(db, "SELECT count(*) FROM station_samples") == [(flips,)],
                timeout_s=30,
                what="every message stored",
            )
            await wait_for(lambda: running.feed.dropped >= 1, what="stuck client dropped")
            assert running.feed.subscribers == 0
        finally:
            stuck.close()


async def test_publishing_never_waits_for_a_subscriber() -> None:
    feed = LiveFeed(lambda device: ("station", {"id": device}), queue_size=100)
    with feed.subscribe() as stuck, feed.subscribe() as reader:
        received = 0
        started = time.perf_counter()
        for n in range(5000):
            feed.device_changed(f"cs-{n % 20:02d}")
            while (event := await reader.next(0)) is not None:
                received += 1
                assert event.kind == "station"
        elapsed = time.perf_counter() - started
        assert received == 5000  # the reader that keeps up gets everything
        assert stuck.lagged
        assert feed.subscribers == 1
        last = await stuck.next(0)
        assert last is not None
        assert last.kind == "lagged"
        assert await stuck.next(0) is None  # nothing after: the stream ends there
        assert elapsed < 5.0


def test_the_listening_socket_says_tcp_so_responses_are_not_held_back() -> None:
    """asyncio sets TCP_NODELAY on accepted connections only when the listening socket's
    protocol is TCP; without it, keep-alive responses waited 40 ms for a delayed ACK."""
    sock = bind(Listen("127.0.0.1", 0))
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


async def test_stopping_ends_the_streams_instead_of_waiting_for_them(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    events: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
    url = live.base.replace("http://", "ws://") + "/api/ws"
    async with (
        httpx.AsyncClient(base_url=live.base, timeout=10) as http,
        http.stream("GET", "/api/events") as response,
        websockets.connect(url, open_timeout=5) as ws,
    ):
        reader = asyncio.create_task(_sse_events(response, events))
        await wait_for(lambda: live.feed.subscribers == 2, what="both subscribed")
        live.stop.set()
        await asyncio.wait_for(reader, 5)  # the SSE stream ended
        kind, data = events.get_nowait()
        assert (kind, data) == ("closing", {"reason": "service stopping"})
        last = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert last["event"] == "closing"
        await asyncio.wait_for(live.server, 5)
    assert not [r for r in caplog.records if "graceful shutdown exceeded" in r.getMessage()]


def _shape(value: object) -> object:
    """The keys of a JSON value, all the way down (values left out: times may be written in
    another precision than a model writes them)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return None


def _as_documented(message: dict) -> object:
    """The event read as the OpenAPI document's `LiveEvent`: it validates, and the model says
    every field the service sent, no more and no fewer."""
    event = LIVE_EVENT.validate_python(message)
    assert _shape(event.model_dump(mode="json")) == _shape(message), message
    return event


async def test_every_event_is_the_documented_live_event(live: Live, device) -> None:
    """Station and alert events, public (SSE) and staff (WebSocket), and the heartbeat:
    each is the `LiveEvent` of /openapi.json, the alert in the form of its stream."""
    cs = device("cs-06")
    added = await admin.add(live.service.settings.db, Role.STAFF, "live staff")
    url = live.base.replace("http://", "ws://") + "/api/ws"
    sse: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
    async with (
        websockets.connect(url, open_timeout=5, additional_headers=bearer(added.token)) as ws,
        httpx.AsyncClient(base_url=live.base, timeout=10) as http,
        http.stream("GET", "/api/events") as response,
    ):
        reader = asyncio.create_task(_sse_events(response, sse))
        await wait_for(lambda: live.feed.subscribers == 2, what="subscribed")
        try:
            cs.publish_raw(
                "facilities/charging/cs-06/telemetry",
                json.dumps(telemetry(1, [port(1, "charging")], leakage_ma=40.0)),
            )
            public = await _next(sse, "alert", "cs-06")
            event = _as_documented({"id": 1, "event": "alert", "data": public})
            assert isinstance(event.data, AlertEventPublic) and not isinstance(
                event.data, AlertEvent
            )
            station = await _next(sse, "station", "cs-06")
            _as_documented({"id": 2, "event": "station", "data": station})
            staff_alert = None
            while staff_alert is None:
                message = json.loads(await asyncio.wait_for(ws.recv(), WITHIN_S))
                event = _as_documented(message)
                if message["event"] == "alert":
                    staff_alert = event
            assert isinstance(staff_alert.data, AlertEvent)
            assert staff_alert.data.actions  # leakage switches the station off
        finally:
            reader.cancel()
    heartbeat = live.feed.heartbeat("2026-01-01T00:00:00Z")
    _as_documented(json.loads(heartbeat.ws()))
