"""`facilities run`: the service and its HTTP API in one process, stopped by SIGTERM/Ctrl-C."""

import asyncio
import contextlib
import logging
import resource
import signal
import socket
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from facilities import heap
from facilities.api.app import create_app
from facilities.api.standby import create_standby_app
from facilities.api.web.pages import listen_url
from facilities.connections import Limits
from facilities.errors import OperatorError
from facilities.metrics import ApiMetrics
from facilities.ownership import Ownership, ownership_of
from facilities.service import Service, run
from facilities.settings import Listen, Settings
from facilities.site import Site
from facilities.wiring import build

log = logging.getLogger(__name__)

# docs/operations.md, "Running under systemd": SIGTERM exits within 5 s. Open HTTP streams
# get 2 s; the last batch the rest.
HTTP_GRACE_S = 2.0
# At a stop, live streams get this long to send their `closing` event before uvicorn closes
# their connections.
STREAMS_GRACE_S = 1.0
# uvicorn's default: a keep-alive connection idle this long between requests is closed.
KEEP_ALIVE_S = 5
# The WebSocket carries the live stream to the client; what a client sends is read and
# ignored, so a small message is plenty (uvicorn's default would take 16 MiB each).
WS_MAX_BYTES = 4096
# Descriptors beyond two per allowed connection (one held, one being refused): the broker
# link, the database, its WAL and shared memory, log files, the interpreter's own.
DESCRIPTORS_RESERVED = 256
# Connections the kernel queues before they are accepted, and asyncio accepts at most this many
# at once before their protocols run (and refuse those past the cap). uvicorn's default (2,048,
# passed to listen() again) let a flood of connections take 7,000 descriptors at once.
LISTEN_BACKLOG = 128


# uvicorn logs a warning for each malformed request and each unsupported upgrade: a client
# sending them in a loop wrote one log line per request (journald then drops the service's
# other lines too, alerts included). At most this many of each a minute, then a count.
CLIENT_WARNINGS_PER_MINUTE = 10
_CLIENT_WARNINGS = ("Invalid HTTP request received.", "Unsupported upgrade request.")


class ClientWarnings(logging.Filter):
    """Lets through at most `per_minute` of each of uvicorn's per-request warnings about a
    client's mistake; the first after a quiet spell says how many were left out."""

    def __init__(self, per_minute: int = CLIENT_WARNINGS_PER_MINUTE) -> None:
        super().__init__()
        self.per_minute = per_minute
        self._windows: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message not in _CLIENT_WARNINGS:
            return True
        now = time.monotonic()
        start, count = self._windows.get(message, (now, 0))
        if now - start >= 60.0:
            left_out = count - self.per_minute
            if left_out > 0:
                record.msg = f"{message} ({left_out} more in the last minute, not logged)"
                record.args = ()
            start, count = now, 0
        self._windows[message] = (start, count + 1)
        return count < self.per_minute


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `serve` below owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(listen: Listen) -> socket.socket:
    """Bind the HTTP socket first, so a taken port is one clear line before anything starts."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted connections only
    # when the listening socket says TCP. With proto 0, Nagle's algorithm and the client's
    # delayed ACK held every keep-alive response back 40 ms (measured: 22 req/s per
    # connection instead of ~1,000; docs/performance.md).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen.host, listen.port))
    except OSError as exc:
        sock.close()
        raise OperatorError(
            f"cannot listen on {listen.host}:{listen.port}: {exc.strerror or exc}"
        ) from None
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


def descriptors_for(max_connections: int) -> None:
    """Raise the soft limit of open descriptors to what `max_connections` needs (up to the
    hard limit), or say that it is short: connections must never take the descriptors the
    broker link and the database need (docs/operations.md, "Connections")."""
    needed = 2 * max_connections + DESCRIPTORS_RESERVED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        if raised < needed:
            log.warning(
                "only %d descriptors for --max-connections %d (%d wanted): raise LimitNOFILE"
                " or lower --max-connections",
                raised,
                max_connections,
                needed,
            )


async def serve(settings: Settings, site: Site, *, started: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT, then finish the batch in hand and return."""
    descriptors_for(settings.max_connections)
    service = build(settings, site)
    sock = bind(settings.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    heap.settle()  # everything is imported and built: only messages come and go from here
    partition = settings.partition
    ownership = None if partition is None else ownership_of(partition, settings.db)
    lost: list[str] = []
    try:
        # stopped while standing by: nothing was opened
        if ownership is None or await _own(service, ownership, sock, stop):
            watch = None if ownership is None else _watch(ownership, stop, lost)
            async with run(service), _task(watch, "partition-watch"):
                await serve_http(service, sock, stop, started=started)
    finally:
        if ownership is not None:
            await ownership.release()  # after the link is closed: a successor resumes it
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        sock.close()
    log.info("stopped")
    if lost:
        raise OperatorError(lost[0])


async def _watch(ownership: Ownership, stop: asyncio.Event, lost: list[str]) -> None:
    """Stop the service if it no longer owns its partition (a standby may own it now)."""
    await ownership.watch()
    lost.append(f"lost {ownership.where}: stopped, another instance may own the partition")
    log.error("%s", lost[0])
    stop.set()


@contextlib.asynccontextmanager
async def _task(work: Coroutine[Any, Any, None] | None, name: str) -> AsyncIterator[None]:
    """`work` as a task for the length of the block, cancelled at its end."""
    task = None if work is None else asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _own(
    service: Service, ownership: Ownership, sock: socket.socket, stop: asyncio.Event
) -> bool:
    """Own the partition: at once if nobody does, else stand by, answering HTTP with
    `standby`, until its owner is gone (True) or we are stopped (False)."""
    partition = service.settings.partition
    assert partition is not None  # only a partition has an owner
    if await ownership.try_acquire():
        log.info("owner of partition %s (%s)", partition, ownership.where)
        return True
    log.warning("standby for partition %s: waiting for %s", partition, ownership.where)
    app = create_standby_app(partition)
    config = _uvicorn_config(app, service.settings, service.metrics.api)
    server = _Server(config)
    # a copy of the socket: uvicorn closes what it served on; the service serves the original
    http = asyncio.create_task(server.serve(sockets=[sock.dup()]), name="http-standby")
    owned = asyncio.create_task(ownership.acquire(), name="partition-wait")
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        await asyncio.wait({owned, stopping, http}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        owned.cancel()
        stopping.cancel()
        server.should_exit = True
        await asyncio.wait_for(http, HTTP_GRACE_S + 1.0)
    if not owned.done() or owned.cancelled():
        return False
    waited_s = owned.result()  # its error, if asking failed, is the service's
    log.warning("took over partition %s after standing by %.1f s", partition, waited_s)
    return True


async def serve_http(
    service: Service,
    sock: socket.socket,
    stop: asyncio.Event,
    *,
    started: asyncio.Event | None = None,
    app: FastAPI | None = None,
) -> None:
    """Serve the HTTP API (by default the whole app over `service`) on `sock` until `stop`
    is set; the service is already running."""
    settings = service.settings
    host, port = sock.getsockname()[:2]
    public_url = settings.public_url
    if not public_url:
        public_url = listen_url(host, port)
        log.warning(
            "--public-url is not set: QR codes and the sticker sheet print %s (the listen"
            " address); set --public-url (FACILITIES_PUBLIC_URL) to the address residents reach",
            public_url,
        )
    app = app or create_app(service.http, public_url=public_url)
    server = _Server(_uvicorn_config(app, settings, service.metrics.api))
    warnings = ClientWarnings()
    logging.getLogger("uvicorn.error").addFilter(warnings)
    http = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    log.info("HTTP API on http://%s:%s (health: /healthz)", host, port)
    if started is not None:
        started.set()
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        await asyncio.wait({http, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        service.feed.close()  # live streams end now instead of holding the shutdown
        await _streams_ended(service)
        server.should_exit = True
        stopping.cancel()
        await asyncio.wait_for(http, HTTP_GRACE_S + 1.0)
        logging.getLogger("uvicorn.error").removeFilter(warnings)


async def _streams_ended(service: Service) -> None:
    """Give each live stream a moment to send its `closing` event: uvicorn's shutdown closes
    a WebSocket at once (1012), and a client would miss why (seen in a loaded test run)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAMS_GRACE_S
    while service.feed.subscribers and loop.time() < deadline:  # noqa: ASYNC110 (once, at a stop)
        await asyncio.sleep(0.01)


def _uvicorn_config(app: FastAPI, settings: Settings, metrics: ApiMetrics) -> uvicorn.Config:
    """uvicorn with the connection limits of docs/operations.md, "Connections"."""
    limits = Limits(
        request_timeout_s=settings.client_timeout_s,
        max_connections=settings.max_connections,
        metrics=metrics,
        trusted_proxies=settings.trusted_proxies,
    )
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(HTTP_GRACE_S),
        lifespan="on",
        http=limits.protocol(),
        # docs/operations.md, "Connections": idle between requests, at most this long
        timeout_keep_alive=max(1, int(min(KEEP_ALIVE_S, settings.client_timeout_s))),
        ws_max_size=WS_MAX_BYTES,
        backlog=LISTEN_BACKLOG,
        # X-Forwarded-For only from the proxies the operator named (uvicorn would believe
        # it from 127.0.0.1 by default: anyone could pick their address on a shared host)
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
        # on every response uvicorn writes, the app's and its own (errors, 503): a browser
        # never guesses a type other than the one declared (an SVG, JSON, a text error)
        headers=[("X-Content-Type-Options", "nosniff")],
        server_header=False,
    )
