"""HTTP connections bounded: a deadline to send each request, a cap on open connections."""

# uvicorn closes a keep-alive connection idle between requests, but sets no deadline for a
# connection that never sends a whole request: measured, 400 connections that sent nothing
# or half a request stayed open for 40 s and more, and ~1,000 would take every descriptor of
# the process (1,024 by default) from the broker link and the database (docs/operations.md,
# "Connections").

import asyncio
import ipaddress
from collections.abc import Iterable
from typing import Any, ClassVar

import h11
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from facilities.metrics import ApiMetrics

# A connection past the cap is answered 503 as soon as its request head is in; it gets
# this long to send it, so that it never holds a descriptor for long.
OVER_CAPACITY_WAIT_S = 1.0
# Connections open at once, as a multiple of the cap: the cap served, as many again being
# answered 503 (server.descriptors_for keeps a descriptor for each); beyond, dropped
# unanswered. Measured before: a flood of connections that sent nothing, each held up to
# OVER_CAPACITY_WAIT_S, took all 8,192 descriptors of the unit's LimitNOFILE
# (`socket.accept() out of system resource`).
REFUSED_HELD_FACTOR = 2
# One client address may hold at most this share of the cap (a fifth: 100 of the default
# 500), so that one address holding streams open cannot take every slot from the residents,
# staff and apps (found by review: 50 anonymous `/api/events` streams from one address made
# the service answer 503 to everyone for as long as they stayed open). Proxies named with
# --trusted-proxy carry many clients and are exempt.
PER_CLIENT_SHARE = 5
# Whole seconds, RFC 9110 §10.2.3: when a client may try again.
RETRY_AFTER_S = 1

_WAITING = (h11.IDLE, h11.SEND_BODY)  # the client's side of a request not fully received


async def _over_capacity(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer on a connection past the cap: 503 and close."""
    del scope, receive
    body = b'{"error": "unavailable", "detail": "too many connections; retry shortly"}'
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(RETRY_AFTER_S).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Limits:
    """What a connection may take: `request_timeout_s` to send a request (head and body,
    from its first byte, or from the connection's start for the first); at most
    `max_connections` open (HTTP and WebSocket together), and a fifth of them from one client
    address other than the `trusted_proxies`."""

    def __init__(
        self,
        *,
        request_timeout_s: float,
        max_connections: int,
        metrics: ApiMetrics | None,
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        self.request_timeout_s = request_timeout_s
        self.max_connections = max_connections
        self.per_client = max(1, max_connections // PER_CLIENT_SHARE)
        self.metrics = metrics
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def over_share(self, host: str, connections: Iterable[object]) -> bool:
        """Whether `host` holds more than its share of the connections (proxies never do)."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if any(address in network for network in self._proxies):
            return False
        held = sum(1 for c in connections if (getattr(c, "client", None) or ("",))[0] == host)
        return held > self.per_client

    def protocol(self) -> type[asyncio.Protocol]:
        """uvicorn's HTTP/1.1 protocol (`http=` of its Config) held to these limits."""
        limits = self

        class Bounded(BoundedProtocol):
            _limits = limits

        return Bounded


class BoundedProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline to send each request and a cap on open
    connections (`Limits.protocol` binds the limits)."""

    _limits: ClassVar[Limits]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._deadline: asyncio.TimerHandle | None = None
        self._wait_s = self._limits.request_timeout_s
        self._over_capacity = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        limits = self._limits
        if len(self.connections) > REFUSED_HELD_FACTOR * limits.max_connections:
            # as many as the cap are being answered 503 already: the descriptors kept for
            # refusing (server.descriptors_for) are taken, so this one is dropped unanswered
            # at once rather than take one the broker link or the database may need
            self._refused("over_capacity")
            self.transport.abort()
            return
        if len(self.connections) > limits.max_connections or (
            self.client is not None and limits.over_share(self.client[0], self.connections)
        ):
            self._over_capacity = True
            self.app = _over_capacity
            self._wait_s = min(self._wait_s, OVER_CAPACITY_WAIT_S)
            self._refused("over_capacity")
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        # a pipelined request already in hand starts now, with no byte to come that would
        # start its deadline (uvicorn cancels its keep-alive timer for it)
        super().on_response_complete()
        if not self.transport.is_closing():
            self._watch()

    def _should_upgrade(self) -> bool:
        # a WebSocket past the cap is answered 503 like any other request
        return not self._over_capacity and super()._should_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """A deadline while a request is not fully received; none otherwise (the app is
        answering, or it is a keep-alive pause, which uvicorn times)."""
        upgraded = self.transport.get_protocol() is not self
        waiting = self.conn.their_state in _WAITING and not upgraded
        if waiting and not self._idle_between_requests():
            if self._deadline is None:
                self._deadline = self.loop.call_later(self._wait_s, self._too_slow)
        else:
            self._disarm()

    def _idle_between_requests(self) -> bool:
        # after a response, before any byte of the next request: uvicorn's keep-alive timer
        # runs then (a deadline here would cut it short)
        return self.timeout_keep_alive_task is not None and self.conn.their_state is h11.IDLE

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._refused("timeout")
            self.transport.close()

    def _refused(self, reason: str) -> None:
        if self._limits.metrics is not None:
            self._limits.metrics.refusals.labels(reason).inc()
