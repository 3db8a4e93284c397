"""`facilities demo`: a private broker, the service and every device simulated, in one command."""

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

from facilities import admin
from facilities.access import Role
from facilities.errors import OperatorError
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl
from facilities.server import bind, serve_http
from facilities.service import Service, run
from facilities.settings import Listen, Settings
from facilities.site import load_site
from facilities.wiring import build
from simulators.fleet import Fleet

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 5.0


async def run_demo(
    *,
    site_path: Path,
    listen: Listen,
    db: Path,
    speed: float,
    run_for_s: float = 0.0,
    scenario: str = "normal",
) -> None:
    """Run everything until Ctrl-C (or `run_for_s`), printing where to look and progress."""
    site = load_site(site_path)
    workdir = db.parent / "demo-broker"
    # A fresh broker each time: what the last demo's devices said on their way out (queued
    # for the service's session) is not news to this one.
    await asyncio.to_thread(shutil.rmtree, workdir / "data", True)
    broker = PrivateBroker(workdir, site)
    await asyncio.to_thread(broker.start)
    try:
        sock = _bind_or_any(listen)
        settings = Settings(site=site_path, broker=broker.url(), db=db, listen=listen)
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
        _say(f"stopped: {stored} messages stored in {db}")
    finally:
        await asyncio.to_thread(broker.stop)


async def _banner(
    service: Service, broker: PrivateBroker, sock: socket.socket, devices: int, speed: float
) -> str:
    """Where to look, with a staff token and a resident token made for this demo."""
    site, db = service.site, service.settings.db
    host, port = sock.getsockname()[:2]
    staff = await admin.add(db, Role.STAFF, "demo staff")
    garage = next(iter(site.garages))
    resident = await admin.add(db, Role.RESIDENT, "demo resident", garages=[garage], site=site)
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
        _say(f"stored {stored} messages ({rate:.0f}/s), {quarantined} quarantined")
        last = stored


def _say(text: str) -> None:
    try:
        print(text, file=sys.stdout, flush=True)
    except BrokenPipeError:
        # the reader of our output went away (`… | head`): the demo itself goes on
        # until it is stopped; further lines are dropped.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  # for the rest of the process
