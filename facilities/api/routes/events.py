"""The live stream: server-sent events, and the same over a WebSocket."""

# Public, like the status pages: without a token (or with a resident's) alerts come in their
# public form; a staff token in `Authorization: Bearer` gets their full form (docs/api.md).

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect, status
from fastapi.responses import StreamingResponse
from starlette.requests import HTTPConnection

from facilities.access import Role
from facilities.api.deps import (
    ClockDep,
    Credentials,
    authenticate,
    bearer_token,
    get_clock,
    get_feed,
)
from facilities.api.errors import refusal
from facilities.api.live import HEARTBEAT_S, Event, LiveFeed, Subscription
from facilities.errors import Refusal

router = APIRouter(prefix="/api", tags=["public"])

# EventSource waits this long before reconnecting after the stream ends (lagged, restart).
RECONNECT_MS = 2000
FINAL = frozenset({"lagged", "closing"})  # events after which the stream ends


async def _is_staff(connection: HTTPConnection, route: str) -> bool:
    """Whether the stream is a staff member's: no token is the public stream; a token that is
    not valid is refused (401, and counted as a failed authentication), not made public."""
    if bearer_token(connection) is None:
        return False
    person = await authenticate(connection, route)
    return person.role is Role.STAFF


def _now(clock: Callable[[], datetime]) -> str:
    return clock().isoformat().replace("+00:00", "Z")


async def _events(
    clock: Callable[[], datetime], subscription: Subscription, feed: LiveFeed
) -> AsyncIterator[Event]:
    """The subscription's events, with a heartbeat when the district is quiet; ends after
    telling a lagging client so."""
    while True:
        event = await subscription.next(HEARTBEAT_S)
        if event is None:
            event = feed.heartbeat(_now(clock))
        yield event
        if event.kind in FINAL:
            return


@router.get(
    "/events",
    response_class=StreamingResponse,
    summary="Live stream (text/event-stream): `station`, `garage`, `alert`, `heartbeat`",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "server-sent events"},
        401: refusal("a token that is not valid (none: the public stream)"),
        429: refusal("too many failed authentications"),
    },
)
async def events(request: Request, clock: ClockDep, _credentials: Credentials) -> StreamingResponse:
    feed = get_feed(request)
    staff = await _is_staff(request, "GET /api/events")

    async def stream() -> AsyncIterator[str]:
        with feed.subscribe(staff=staff) as subscription:
            yield f"retry: {RECONNECT_MS}\n\n"
            async for event in _events(clock, subscription, feed):
                yield event.sse()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.websocket("/ws")
async def websocket(socket: WebSocket) -> None:
    """The same events as /api/events, one JSON text message each:
    `{"id": …, "event": "station", "data": {…}}`. A token that is not valid: the handshake
    is refused (403)."""
    clock = get_clock(socket)
    feed = get_feed(socket)
    try:
        staff = await _is_staff(socket, "WEBSOCKET /api/ws")
    except Refusal as refused:
        await socket.close(code=status.WS_1008_POLICY_VIOLATION, reason=refused.error)
        return
    await socket.accept()
    with feed.subscribe(staff=staff) as subscription:
        closed = asyncio.create_task(_until_closed(socket), name="ws-reader")
        try:
            while not closed.done():
                waiting = asyncio.create_task(subscription.next(HEARTBEAT_S))
                await asyncio.wait({waiting, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():
                    waiting.cancel()
                    return  # the client left: stop at once, not at the next heartbeat
                event = waiting.result() or feed.heartbeat(_now(clock))
                await socket.send_text(event.ws())
                if event.kind in FINAL:
                    break
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the client went away mid-send
        finally:
            closed.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await closed
        with contextlib.suppress(RuntimeError, OSError):
            await socket.close()


async def _until_closed(socket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it disconnects."""
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return
