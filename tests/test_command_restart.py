"""A cut-off survives a restart of the service: a safety command in flight when the service
stops (SIGTERM or SIGKILL) is sent again after the restart with the same id, and actions
the rules asked for but that were not sent yet are kept in the outbox and sent at the next
start. No command row stays `pending`."""

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from facilities.messages import Accepted
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.commands import CommandSender
from facilities.mqtt.decode import Decoder
from facilities.mqtt.session import BrokerLink, BrokerUrl
from facilities.mqtt.topics import Topics
from facilities.rules.engine import Engine
from facilities.rules.live_state import LiveState
from facilities.rules.runner import RulesRunner, utc_now
from facilities.service import run
from facilities.settings import Settings
from facilities.site import Site, load_site
from facilities.store.db import SharedWriter, open_db
from facilities.wiring import build
from simulators.charging import PortModel, StationModel
from simulators.client import DeviceClient
from simulators.devices import Behaviour, SimulatedStation
from tests.support.db import query
from tests.support.devices import clear_retained_status
from tests.support.paths import EXAMPLE_SITE
from tests.support.payloads import port, telemetry
from tests.support.poll import wait_for
from tests.support.processes import ServiceProcess, run_cli

# Short enough that a silent station is given up on within seconds (3 tries of 1 s), long
# enough that the test stops the service while the first try still waits for its ack.
TIMEOUT_S = 1.0


@pytest.fixture
def quick_site_file(tmp_path: Path) -> Path:
    """The example district with 1 s command timeouts (3 tries), as a site file."""
    text = EXAMPLE_SITE.read_text("utf-8")
    assert "[rules]\n" in text
    path = tmp_path / "site.toml"
    path.write_text(
        text.replace("[rules]\n", f"[rules]\ncommand_timeout_s = {TIMEOUT_S}\n", 1), "utf-8"
    )
    return path


@pytest.fixture(autouse=True)
def _no_retained_availability(broker: PrivateBroker, site: Site) -> None:
    """An `offline` an earlier test's device left retained on the session broker would make
    the restarted service hold its commands for a station it takes to be offline."""
    clear_retained_status(broker, site)


@pytest.fixture
def station(stations: Callable[..., SimulatedStation]) -> SimulatedStation:
    """cs-16, silent until a test tells it to obey."""
    return stations("cs-16", Behaviour.IGNORE)


def _leakage(seq: int) -> dict[str, object]:
    return telemetry(seq, [port(1, "charging", voltage_v=230.0, power_w=300.0)], leakage_ma=40.0)


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
@pytest.mark.parametrize("answers", [True, False], ids=["acks-after", "stays-silent"])
async def test_a_power_off_in_flight_is_sent_again_after_a_restart(
    tmp_path: Path,
    broker: PrivateBroker,
    station: SimulatedStation,
    quick_site_file: Path,
    stop: str,
    answers: bool,
    store_target: str,
) -> None:
    db = store_target
    client_id = f"restart-{uuid.uuid4().hex[:6]}"
    first = ServiceProcess(
        broker, db, client_id=client_id, log=tmp_path / "1.log", site=quick_site_file
    ).start()
    second = ServiceProcess(
        broker, db, client_id=client_id, log=tmp_path / "2.log", site=quick_site_file
    )
    try:
        station.publish_raw(_leakage(1))
        await wait_for(lambda: len(station.commands) >= 1, what="power_off at the station")
        (sent,) = station.commands
        assert sent.action.value == "power_off" and sent.port is None
        # in flight: the alert and the command stored, the station silent
        await wait_for(
            lambda: (
                query(
                    db,
                    "SELECT a.rule, c.outcome FROM alerts a JOIN commands c ON c.alert_id = a.id",
                )
                == [("leakage", "pending")]
            ),
            what="the alert and its command stored",
        )
        if stop == "sigterm":
            code, _seconds = first.terminate()
            assert code == 0
        else:
            first.kill()
        before = len(station.commands)
        assert query(db, "SELECT outcome FROM commands") == [("pending",)]
        if answers:
            station.behaviour = Behaviour.OBEY
        second.start()
        await wait_for(
            lambda: len(station.commands) > before, timeout_s=10, what="the command again"
        )
        again = station.commands[before]
        # the same command (the device dedups on its id), sent anew: new ts and expires
        assert (again.id, again.action, again.port) == (sent.id, sent.action, sent.port)
        assert again.ts > sent.ts
        assert again.expires is not None and again.expires > again.ts
        if answers:
            await wait_for(
                lambda: query(db, "SELECT id, outcome FROM commands") == [(sent.id, "acked")],
                what="the ack stored",
            )
            assert query(db, "SELECT rule FROM alerts WHERE rule = 'command_failed'") == []
        else:
            await wait_for(
                lambda: query(db, "SELECT id, outcome FROM commands") == [(sent.id, "timeout")],
                timeout_s=15,
                what="the timeout stored",
            )
            await wait_for(
                lambda: (
                    query(db, "SELECT subject, state FROM alerts WHERE rule = 'command_failed'")
                    == [("cs-16", "active")]
                ),
                what="command_failed raised",
            )
        assert {c.id for c in station.commands} == {sent.id}
        assert query(db, "SELECT count(*) FROM command_outbox") == [(0,)]
        code, _seconds = second.terminate()
        assert code == 0
        assert query(db, "SELECT count(*) FROM commands WHERE outcome = 'pending'") == [(0,)]
    finally:
        for service in (first, second):
            if service.process is not None and service.process.poll() is None:
                service.kill()


async def test_actions_not_sent_at_shutdown_are_kept_and_sent_at_the_next_start(
    tmp_path: Path, broker: PrivateBroker, settings: Settings, site: Site
) -> None:
    """The rules asked for a cut-off and the service stopped before sending it: the action is
    stored with its alert (the outbox) and sent at the next start."""
    topics = Topics()
    conn = await open_db(settings.db)
    link = BrokerLink(
        BrokerUrl.parse(settings.broker),
        client_id=f"outbox-{uuid.uuid4().hex[:6]}",
        topics=topics,
        on_message=lambda _message: None,
        subscriptions=[],
    )
    client = DeviceClient(
        BrokerUrl.parse(broker.url("cs-17")), client_id=f"cs-17-{uuid.uuid4().hex[:6]}"
    ).connect()
    station = SimulatedStation(client, StationModel("cs-17", [PortModel(1)]), topics)
    try:
        await link.connect(timeout_s=5)
        db = SharedWriter(conn)
        live = LiveState(Engine(site), clock=utc_now)
        runtime = RulesRunner(live, db, link, CommandSender(link, db))
        running = asyncio.create_task(runtime.run())
        await asyncio.sleep(0.1)  # ticking, waiting for work
        raw = json.dumps(_leakage(1)).encode()
        message = Decoder(site, topics).decode(
            topics.station("cs-17", "telemetry"), raw, time.time()
        )
        assert isinstance(message, Accepted)
        live.observe(message)  # the rules raise leakage and ask for a power_off …
        running.cancel()  # … and the service stops before it is sent
        with pytest.raises(asyncio.CancelledError):
            await running
    finally:
        await link.close()
        await conn.close()
    assert station.commands == []
    assert query(settings.db, "SELECT rule, subject, state FROM alerts WHERE rule = 'leakage'") == [
        ("leakage", "cs-17", "active")
    ]
    ((command_id,),) = query(
        settings.db, "SELECT id FROM command_outbox WHERE device = 'cs-17' AND port IS NULL"
    )
    try:
        service = build(settings, load_site(EXAMPLE_SITE))
        async with run(service):
            await wait_for(lambda: len(station.commands) == 1, what="the kept power_off sent")
            assert (station.commands[0].id, station.commands[0].action.value) == (
                command_id,
                "power_off",
            )
            await wait_for(
                lambda: query(settings.db, "SELECT outcome FROM commands") == [("acked",)],
                what="its ack stored",
            )
            assert query(settings.db, "SELECT count(*) FROM command_outbox") == [(0,)]
    finally:
        client.close()


@pytest.mark.slow
async def test_a_staff_command_waiting_when_the_service_dies_is_closed_not_sent_again(
    tmp_path: Path,
    broker: PrivateBroker,
    station: SimulatedStation,
    quick_site_file: Path,
    store_target: str,
) -> None:
    """A late power_on is worse than none: a person's command is never sent again by a
    restart; its row is closed with the reason (the person got no answer)."""
    db = store_target
    added = run_cli("staff", "add", "--db", str(db), "--name", "值班 孙")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    client_id = f"staff-{uuid.uuid4().hex[:6]}"
    first = ServiceProcess(
        broker, db, client_id=client_id, log=tmp_path / "1.log", site=quick_site_file
    ).start()
    second = ServiceProcess(
        broker, db, client_id=client_id, log=tmp_path / "2.log", site=quick_site_file
    )
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            request = asyncio.create_task(
                http.post(
                    f"http://127.0.0.1:{first.port}/api/stations/cs-16/ports/2/power",
                    json={"on": True},
                    headers={"Authorization": f"Bearer {token}"},
                )
            )
            await wait_for(lambda: len(station.commands) == 1, what="power_on at the station")
            await wait_for(
                lambda: query(db, "SELECT outcome FROM commands") == [("pending",)],
                what="its row stored",
            )
            first.kill()
            with pytest.raises(httpx.HTTPError):
                await request
        station.behaviour = Behaviour.OBEY
        second.start()
        await wait_for(
            lambda: (
                query(db, "SELECT outcome, error FROM commands")
                == [("abandoned", "the service stopped before the answer")]
            ),
            what="the row closed",
        )
        assert len(station.commands) == 1  # not sent again
        assert query(db, "SELECT count(*) FROM command_outbox") == [(0,)]
    finally:
        for service in (first, second):
            if service.process is not None and service.process.poll() is None:
                service.kill()


async def test_a_command_whose_alert_cleared_is_not_sent_again(
    broker: PrivateBroker, settings: Settings, site: Site
) -> None:
    """A cut-off in flight whose hazard cleared before the stop: at start its row is closed
    with the reason, and nothing is sent."""
    spec = site.stations["cs-18"]
    fast = spec.thresholds.merged({"clear_after_s": 0, "command_timeout_s": 5.0})
    quick = replace(site, stations={**site.stations, "cs-18": replace(spec, thresholds=fast)})
    client = DeviceClient(
        BrokerUrl.parse(broker.url("cs-18")), client_id=f"cs-18-{uuid.uuid4().hex[:6]}"
    ).connect()
    model = StationModel("cs-18", [PortModel(n) for n in range(1, 11)])
    station = SimulatedStation(client, model, Topics(), behaviour=Behaviour.IGNORE)
    db = settings.db
    try:
        first = build(settings, quick)
        async with run(first):
            await wait_for(lambda: first.link.subscribed, what="subscription")
            station.publish_raw(_leakage(1))
            await wait_for(lambda: len(station.commands) == 1, what="power_off at the station")
            cool = {**_leakage(2), "leakage_ma": 0.0}
            station.publish_raw(cool)
            await wait_for(
                lambda: (
                    query(db, "SELECT state FROM alerts WHERE rule = 'leakage'") == [("cleared",)]
                ),
                what="leakage cleared while the power_off waits for its ack",
            )
        (command_id,) = {c.id for c in station.commands}
        assert query(db, "SELECT id FROM command_outbox") == [(command_id,)]
        station.behaviour = Behaviour.OBEY
        sent = len(station.commands)
        second = build(settings, quick)
        async with run(second):
            await wait_for(lambda: second.link.subscribed, what="subscription")
            await wait_for(
                lambda: (
                    query(db, "SELECT id, outcome, error FROM commands")
                    == [(command_id, "abandoned", "not sent again: its alert is closed")]
                ),
                what="the row closed",
            )
            assert query(db, "SELECT count(*) FROM command_outbox") == [(0,)]
        assert len(station.commands) == sent
    finally:
        client.close()


async def test_a_command_to_a_device_known_offline_at_start_waits_for_it_to_come_back(
    broker: PrivateBroker, settings: Settings, site: Site
) -> None:
    """Not sent again into the broker session of a device known offline (it would arrive
    late): its row is closed at start, and the cut goes out when the device is back."""
    client_id = f"cs-19-{uuid.uuid4().hex[:6]}"
    client = DeviceClient(BrokerUrl.parse(broker.url("cs-19")), client_id=client_id).connect()
    model = StationModel("cs-19", [PortModel(n) for n in range(1, 11)])
    station = SimulatedStation(client, model, Topics(), behaviour=Behaviour.IGNORE)
    availability = Topics().station("cs-19", "availability")
    db = settings.db
    try:
        first = build(settings, site)
        async with run(first):
            await wait_for(lambda: first.link.subscribed, what="subscription")
            station.publish_raw(_leakage(1))
            await wait_for(lambda: len(station.commands) == 1, what="power_off at the station")
            client.publish_raw(availability, "offline").wait_for_publish(5)
            await wait_for(
                lambda: first.live.read(lambda e: e.stations["cs-19"].online) is False,
                what="cs-19 known offline",
            )
        (first_id,) = {c.id for c in station.commands}
        station.behaviour = Behaviour.OBEY
        second = build(settings, site)
        async with run(second):
            await wait_for(lambda: second.link.subscribed, what="subscription")
            await wait_for(
                lambda: (
                    query(db, "SELECT id, outcome, error FROM commands")
                    == [(first_id, "abandoned", "not sent again: the device is offline")]
                ),
                what="the row closed",
            )
            assert len(station.commands) == 1
            client.publish_raw(availability, "online").wait_for_publish(5)
            await wait_for(
                lambda: (
                    query(db, "SELECT outcome FROM commands WHERE id != ?", first_id)
                    == [("acked",)]
                ),
                what="the cut sent and acked once the station is back",
            )
            assert query(db, "SELECT count(*) FROM command_outbox") == [(0,)]
    finally:
        client.close()
