"""HTTP metrics: requests by route template, method and status; time to answer."""

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facilities.metrics import ApiMetrics

# Streams last as long as the client stays: their duration says nothing about speed.
STREAMS = frozenset({"/api/events", "/api/ws"})
# The method label: h11 takes any token as a method (up to 16 KiB), and each new one was a new
# series of the counter and the histogram (3,000 invented methods made /metrics 472 MB).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    """Pure ASGI middleware (it never buffers a response, so streams stay streams). The
    route label is the matched route's template (`/api/stations/{station_id}`), never the
    raw path, so the number of series stays bounded whatever clients ask for."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            method = method if method in METHODS else "other"
            self.metrics.requests.labels(template, method, str(status)).inc()
            if template not in STREAMS:
                elapsed = time.perf_counter() - started
                self.metrics.duration_seconds.labels(template, method).observe(elapsed)
