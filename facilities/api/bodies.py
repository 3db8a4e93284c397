"""Request bodies bounded: refused with 413 before they are read (pure ASGI middleware)."""

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facilities.metrics import ApiMetrics

# The largest body the API takes is `{"on": false}` (a few dozen bytes): 16 KiB leaves room
# for any future one and bounds what a client can make the service buffer and parse. Today a
# 15 MB body was parsed in full (1.9 s and +400 MB for one; four stalled the event loop, and
# with it the safety commands, for 6.6 s).
MAX_BODY_BYTES = 16 * 1024


class BodyLimit:
    """A request that declares a body over `limit` (Content-Length) is answered 413 before a
    byte of it is read; a body without a length (chunked) is read into memory up to `limit`
    and refused as soon as it goes past it. The app then gets the body as one message."""

    def __init__(
        self, app: ASGIApp, *, limit: int = MAX_BODY_BYTES, metrics: ApiMetrics | None = None
    ) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length, chunked = headers.get(b"content-length"), b"transfer-encoding" in headers
        if length is None and not chunked:
            await self.app(scope, receive, send)  # no body
            return
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # gone before the body was in: nothing to answer
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _refuse(self, send: Send) -> None:
        if self.metrics is not None:
            self.metrics.refusals.labels("too_large").inc()
        content = json.dumps(
            {"error": "too_large", "detail": f"the body is over {self.limit} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                    # the rest of the body is not read: this connection cannot carry another
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, as one message; then whatever the connection says next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
