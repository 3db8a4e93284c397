"""`facilities demo`: a private broker, the service and every device simulated, in one command."""

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from facilities import admin
from facilities.access import Role
from facilities.errors import OperatorError
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl
from facilities.server import bind, serve_http
from facilities.service import Service, run
from facilities.settings import Listen, Settings
from facilities.site import Site, load_site
from facilities.store.db import PRIVATE_DIR, PRIVATE_FILE
from facilities.wiring import build
from simulators.fleet import Fleet

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 5.0
# On a terminal the progress line is rewritten in place (carriage return, erase the line):
# the banner above it stays on a 24-line screen for as long as the demo runs.
ERASE_LINE = "\r\x1b[K"


async def run_demo(
    *,
    site_path: Path,
    listen: Listen,
    db: Path,
    speed: float,
    run_for_s: float = 0.0,
    scenario: str = "normal",
) -> None:
    """Run everything until Ctrl-C (or `run_for_s`), printing where to look and progress;
    refused if another demo runs on `db`."""
    site = load_site(site_path)
    with _sole_demo(db), _quiet_logs():
        await _run_demo(
            site_path,
            site,
            listen=listen,
            db=db,
            speed=speed,
            run_for_s=run_for_s,
            scenario=scenario,
        )


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """At the default level (INFO) the demo logs warnings and errors only: the 25 devices
    coming online, the migrations and the web server's start would push the banner off a
    24-line terminal. `--log-level DEBUG` shows everything."""
    root = logging.getLogger()
    level = root.level
    if level == logging.INFO:
        root.setLevel(logging.WARNING)
    handlers = list(root.handlers)
    for handler in handlers:
        handler.addFilter(_TERMINAL.filter)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(_TERMINAL.filter)
        root.setLevel(level)


@contextlib.contextmanager
def _sole_demo(db: Path) -> Iterator[None]:
    """Hold `<db>.demo-lock` (flock, released when the process ends, however it ends), or
    refuse: a second demo would share the database and wipe the first one's broker."""
    if not db.parent.exists():
        db.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    fd = os.open(f"{db}.demo-lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise OperatorError(
                f"another demo is running on {db} (pid {holder}): stop it, or give this one"
                " a database of its own (--db PATH)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


async def _run_demo(
    site_path: Path,
    site: Site,
    *,
    listen: Listen,
    db: Path,
    speed: float,
    run_for_s: float,
    scenario: str,
) -> None:
    # a broker directory of each database's own: demo.db's is demo-broker
    workdir = db.parent / f"{db.stem}-broker"
    # A fresh broker each time: what the last demo's devices said on their way out (queued
    # for the service's session) is not news to this one.
    await asyncio.to_thread(shutil.rmtree, workdir / "data", True)
    broker = PrivateBroker(workdir, site)
    await asyncio.to_thread(broker.start)
    try:
        sock = _bind_or_any(listen)
        host, port = sock.getsockname()[:2]
        settings = Settings(
            site=site_path,
            broker=broker.url(),
            db=str(db),
            listen=listen,
            # the QR codes print the address the demo listens on (no warning about it)
            public_url=f"http://{host}:{port}",
        )
        service = build(settings, site)
        fleet = Fleet(
            site,
            BrokerUrl.parse(broker.url()),
            credentials=broker.credentials,
            speed=speed,
            scenario=scenario,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if run_for_s > 0:
            loop.call_later(run_for_s, stop.set)
        try:
            async with run(service):
                await asyncio.to_thread(fleet.connect)
                _say(await _banner(service, broker, sock, len(fleet.clients), speed))
                async with asyncio.TaskGroup() as tasks:
                    sim = tasks.create_task(fleet.run(), name="simulators")
                    progress = tasks.create_task(_progress(service), name="progress")
                    await serve_http(service, sock, stop)
                    sim.cancel()
                    progress.cancel()
                stored = service.ingest.committed
        finally:
            # the devices go after the service: the demo's stop is not a district-wide outage
            fleet.close()
            _TERMINAL.end_line()
        _say(f"stopped: {stored} messages stored in {db}")
    finally:
        await asyncio.to_thread(broker.stop)


async def _banner(
    service: Service, broker: PrivateBroker, sock: socket.socket, devices: int, speed: float
) -> str:
    """Where to look, with a staff token and a resident token made for this demo."""
    site, db = service.site, service.settings.db
    host, port = sock.getsockname()[:2]
    # the last demo's tokens are replaced, not piled up
    staff = await admin.add(db, Role.STAFF, "demo staff", replacing=True)
    garage = next(iter(site.garages))
    resident = await admin.add(
        db, Role.RESIDENT, "demo resident", garages=[garage], site=site, replacing=True
    )
    return (
        f"broker   mqtt://127.0.0.1:{broker.port} (private, config in {broker.workdir})\n"
        f"status   http://{host}:{port}/  (residents; staff: /staff)\n"
        f"service  http://{host}:{port}/healthz\n"
        f"api docs http://{host}:{port}/docs\n"
        f"metrics  http://{host}:{port}/metrics\n"
        f"database {db}\n"
        f"staff token    {staff.token}  (Authorization: Bearer …; /api/alerts)\n"
        f"resident token {resident.token}  (may open the gates of {garage})\n"
        f"{devices} devices simulated, time x{speed:g}. Ctrl-C stops."
    )


def _bind_or_any(listen: Listen) -> socket.socket:
    try:
        return bind(listen)
    except OperatorError:
        log.warning("port %d is taken; the demo listens on a free port instead", listen.port)
        return bind(Listen(listen.host, 0))


async def _progress(service: Service) -> None:
    last = 0
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        stored = service.ingest.committed
        quarantined = service.ingest.quarantined
        rate = (stored - last) / PROGRESS_EVERY_S
        _TERMINAL.progress(f"stored {stored} messages ({rate:.0f}/s), {quarantined} quarantined")
        last = stored


class _Terminal:
    """The demo's output: lines, and a progress line that a terminal shows in place (a pipe,
    `| tee` or a test, gets a line each time). A log record ends the progress line first, so
    that it is not written on top of it."""

    def __init__(self) -> None:
        self._open = False  # a progress line is on the screen, without its newline

    def say(self, text: str) -> None:
        self.end_line()
        self._write(text + "\n")

    def progress(self, text: str) -> None:
        if not self._isatty():
            self._write(text + "\n")
            return
        self._write(ERASE_LINE + text)
        self._open = True

    def end_line(self) -> None:
        if self._open:
            self._open = False
            self._write("\n")

    def filter(self, _record: logging.LogRecord) -> bool:
        """A logging filter of the root's handlers: a log line goes below the progress line."""
        self.end_line()
        return True

    @staticmethod
    def _isatty() -> bool:
        try:
            return sys.stdout.isatty()
        except ValueError:  # closed
            return False

    @staticmethod
    def _write(text: str) -> None:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            # the reader of our output went away (`… | head`): the demo itself goes on
            # until it is stopped; further lines are dropped.
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  # for the rest of the process


_TERMINAL = _Terminal()


def _say(text: str) -> None:
    _TERMINAL.say(text)
