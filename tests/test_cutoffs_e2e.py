"""The desired state through the real broker: a cut-off is re-asserted while its alert is open
(a person's power-on, a station's reboot, a gate closing during smoke), commands wait for a
device known offline, and staff see every port the service switched off until it is back on."""

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from facilities.access import Role
from facilities.garage.payloads import GateEventType
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl
from facilities.mqtt.topics import Topics
from facilities.service import run
from facilities.settings import Settings
from facilities.site import Site
from facilities.wiring import build
from simulators.charging import PortModel, StationModel
from simulators.client import DeviceClient
from simulators.devices import Behaviour, SimulatedStation
from tests.api_support import Api, bearer
from tests.support.db import query
from tests.support.devices import clear_retained_status
from tests.support.payloads import port, telemetry
from tests.support.poll import wait_for
from tests.support.processes import ServiceProcess

# port_temp_max_c is 60 °C, its hysteresis band 54-60 °C. Steps between readings stay under
# temperature_rise's 10 °C, so that only port_over_temperature speaks.
HOT_C = 65.0
WARM_C = 58.0  # in the band: the alert stays open, the rule does not fire
COOL_C = 50.0  # under the band: the alert counts down to cleared (60 s)


class Observer:
    """Every command the broker delivers on `topic`, seen by an MQTT 5 client."""

    def __init__(self, broker: PrivateBroker, topic: str) -> None:
        url = BrokerUrl.parse(broker.url(broker.new_user_like("observer")))
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"observer-{uuid.uuid4().hex[:6]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.username_pw_set(url.username, url.password)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_args: subscribed.set()
        self._client.connect(url.host, url.port)
        self._client.loop_start()
        self._client.subscribe(topic, qos=1)
        assert subscribed.wait(5), "observer not subscribed"

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.seen.append((msg.topic, json.loads(msg.payload)))

    def on(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return [body for t, body in self.seen if t == topic]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@pytest.fixture
def observer(broker: PrivateBroker) -> Iterator[Observer]:
    seen = Observer(broker, "facilities/charging/+/command")
    yield seen
    seen.close()


def _offs(station: SimulatedStation, port_no: int | None) -> list[str]:
    return [c.id for c in station.commands if c.action.value == "power_off" and c.port == port_no]


async def _cut_hot_port(api: Api, station: SimulatedStation, port_no: int) -> str:
    """Report the port at 65 °C; wait for the cut to be acked and reported; the alert id."""
    station.model.ports[port_no - 1].temp_c = HOT_C  # what it reports after a command
    station.publish_raw(telemetry(1, [port(port_no, "charging", temp_c=HOT_C)]))
    db = api.service.settings.db
    await wait_for(
        lambda: (
            query(db, "SELECT outcome FROM commands WHERE reason = 'port_over_temperature'")
            == [("acked",)]
        ),
        what="the first cut acked",
    )
    sid = station.model.station
    await wait_for(
        lambda: (
            api.service.live.read(lambda e: e.stations[sid].ports[port_no].state.value)
            == "disabled"
        ),
        what="the port reported disabled",
    )
    return api.service.live.read(
        lambda e: e.alerts[("port_over_temperature", f"{sid}/{port_no}")].id
    )


def _port_free(body: dict[str, Any], port_no: int) -> bool:
    return bool(next(p for p in body["ports"] if p["port"] == port_no)["free"])


async def test_power_on_is_refused_while_the_port_is_still_over_its_limit(
    api: Api, stations
) -> None:
    _, staff = await api.person(Role.STAFF, "物业 陈经理")
    cs = stations("cs-07")
    alert_id = await _cut_hot_port(api, cs, 2)
    acked = await api.http.post(f"/api/alerts/{alert_id}/ack", headers=bearer(staff))
    assert acked.status_code == 200
    # the station keeps reporting the socket at 65 °C, switched off
    cs.publish_raw(telemetry(2, [port(2, "disabled", temp_c=HOT_C)]))
    await wait_for(
        lambda: api.service.live.read(lambda e: e.stations["cs-07"].ports[2].temp_c) == HOT_C,
        what="the hot reading",
    )
    on = await api.http.post(
        "/api/stations/cs-07/ports/2/power", json={"on": True}, headers=bearer(staff)
    )
    assert on.status_code == 409, on.text
    assert on.json()["error"] == "conflict"
    assert "port_over_temperature (cs-07/2)" in on.json()["detail"]
    assert not any(c.action.value == "power_on" for c in cs.commands)
    shown = (await api.http.get("/api/stations/cs-07")).json()
    assert not _port_free(shown, 2)


async def test_firing_evidence_for_an_open_alert_cuts_again_after_a_power_on(
    api: Api, stations
) -> None:
    _, staff = await api.person(Role.STAFF, "物业 陈经理")
    cs = stations("cs-07")
    alert_id = await _cut_hot_port(api, cs, 2)
    first = _offs(cs, 2)
    assert len(first) == 1
    await api.http.post(f"/api/alerts/{alert_id}/ack", headers=bearer(staff))
    cs.model.ports[1].temp_c = WARM_C  # it cooled down a little
    cs.publish_raw(telemetry(2, [port(2, "disabled", temp_c=WARM_C)]))
    await wait_for(
        lambda: api.service.live.read(lambda e: e.stations["cs-07"].ports[2].temp_c) == WARM_C,
        what="the warm reading",
    )
    on = await api.http.post(
        "/api/stations/cs-07/ports/2/power", json={"on": True}, headers=bearer(staff)
    )
    assert on.status_code == 200, on.text
    # someone plugs in again and the socket heats up again, the alert still open
    cs.publish_raw(telemetry(3, [port(2, "charging", temp_c=HOT_C)]))
    await wait_for(lambda: len(_offs(cs, 2)) == 2, what="the port cut again")
    assert _offs(cs, 2)[1] != first[0]  # a new command, not a retry of the first
    db = api.service.settings.db
    await wait_for(
        lambda: (
            query(
                db,
                "SELECT outcome, alert_id FROM commands WHERE reason = 'port_over_temperature'"
                " ORDER BY sent_at",
            )
            == [("acked", alert_id), ("acked", alert_id)]
        ),
        what="the second cut acked, for the same alert",
    )
    await wait_for(
        lambda: (
            api.service.live.read(lambda e: e.stations["cs-07"].ports[2].state.value) == "disabled"
        ),
        what="the port reported disabled again",
    )


async def test_a_station_that_reboots_while_the_hazard_is_open_is_cut_again(
    api: Api, stations
) -> None:
    cs = stations("cs-09")
    await _cut_hot_port(api, cs, 1)
    assert len(_offs(cs, 1)) == 1
    # the station reboots: its sequence starts again at 0 and every port is on, idle
    cs.model.power_on(None)
    cs.model.ports[0].temp_c = COOL_C
    cs.publish_raw(telemetry(0, [port(1, "idle", temp_c=COOL_C)]))
    await wait_for(lambda: len(_offs(cs, 1)) == 2, what="power_off again after the reboot")
    await wait_for(
        lambda: (
            api.service.live.read(lambda e: e.stations["cs-09"].ports[1].state.value) == "disabled"
        ),
        what="the port reported disabled again",
    )


@pytest.mark.sqlite_only("the write lock of the database file")
async def test_a_reboot_reported_while_the_cuts_outcome_is_being_written_is_cut_again(
    api: Api, stations
) -> None:
    """The station acks the cut, reports the port off, and reboots at once: its report of
    the port on comes while the service is still writing the first command's outcome (here
    held up by another process holding the database's write lock; under load, any slow
    write). The cut-off is asserted again at once, not dropped as a repeat of the command
    whose ack already came."""
    cs = stations("cs-09")
    db = api.service.settings.db
    # taken in a thread: the service runs on this test's event loop (tests/test_health.py)
    locker = sqlite3.connect(db, isolation_level=None, timeout=30, check_same_thread=False)
    try:
        await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")
        cs.model.ports[0].temp_c = HOT_C  # what it reports after the command
        cs.publish_raw(telemetry(1, [port(1, "charging", temp_c=HOT_C)]))
        await wait_for(lambda: len(_offs(cs, 1)) == 1, what="the first cut")
        await wait_for(
            lambda: (
                api.service.live.read(lambda e: e.stations["cs-09"].ports[1].state.value)
                == "disabled"
            ),
            what="the port reported disabled",
        )
        cs.model.power_on(None)
        cs.model.ports[0].temp_c = COOL_C
        cs.publish_raw(telemetry(0, [port(1, "idle", temp_c=COOL_C)]))
        await wait_for(lambda: len(_offs(cs, 1)) == 2, what="power_off again after the reboot")
    finally:
        await asyncio.to_thread(locker.execute, "ROLLBACK")
        locker.close()
    await wait_for(
        lambda: (
            api.service.live.read(lambda e: e.stations["cs-09"].ports[1].state.value) == "disabled"
        ),
        what="the port reported disabled again",
    )
    await wait_for(
        lambda: (
            query(db, "SELECT outcome FROM commands WHERE reason = 'port_over_temperature'")
            == [("acked",), ("acked",)]
        ),
        timeout_s=30,
        what="both cuts acked in the audit once the lock is let go",
    )


async def test_gates_are_held_open_during_garage_smoke(api: Api, gates) -> None:
    garage = gates("g-cq4")
    garage.client.publish_raw(
        "facilities/garage/g-cq4/telemetry",
        json.dumps({"seq": 1, "ts": time.time(), "smoke": True, "occupancy": 80}),
    ).wait_for_publish(5)

    await wait_for(lambda: len(garage.commands) == 2, what="both gates opened")
    db = api.service.settings.db
    await wait_for(
        lambda: query(db, "SELECT count(*) FROM commands WHERE outcome = 'acked'") == [(2,)],
        what="both opens acked",
    )
    garage.gate_event("north", GateEventType.CLOSED)  # the gate's closer pulls it shut
    await wait_for(lambda: len(garage.commands) == 3, what="north opened again")
    assert garage.commands[2].action.value == "open"
    await wait_for(
        lambda: (
            query(db, "SELECT gate, outcome FROM commands WHERE gate = 'north' ORDER BY sent_at")
            == [("north", "acked"), ("north", "acked")]
        ),
        what="the second open acked",
    )


async def test_a_station_cut_by_its_garages_smoke_stays_off_until_a_person_has_looked(
    api: Api, stations, gates
) -> None:
    """The garage's smoke alert holds the stations inside off: once the smoke is gone (the
    rule no longer fires) a power-on still waits for someone to acknowledge that alert, as
    for an alert of the station itself; the list of cut-offs says so."""
    _, staff = await api.person(Role.STAFF, "物业 陈经理")
    cs = stations("cs-01")  # stands inside g-cq4
    cs.publish_raw(telemetry(1, [port(1, "charging", power_w=150.0)]))
    garage = gates("g-cq4")

    def smoke(seq: int, *, on: bool) -> None:
        body = {"seq": seq, "ts": time.time(), "smoke": on, "occupancy": 80}
        garage.client.publish_raw("facilities/garage/g-cq4/telemetry", json.dumps(body))

    smoke(1, on=True)
    await wait_for(lambda: _offs(cs, None), what="the station switched off")
    await wait_for(
        lambda: (
            api.service.live.read(lambda e: e.stations["cs-01"].ports[1].state.value) == "disabled"
        ),
        what="the port reported disabled",
    )
    smoke(2, on=False)  # the smoke is gone; its alert stays open until it clears (60 s)
    await wait_for(
        lambda: api.service.live.read(lambda e: e.garages["g-cq4"].smoke) is False,
        what="no smoke any more",
    )
    alert_id = api.service.live.read(lambda e: e.alerts[("smoke", "g-cq4")].id)
    path = "/api/stations/cs-01/ports/1/power"
    on = await api.http.post(path, json={"on": True}, headers=bearer(staff))
    assert on.status_code == 409, on.text
    assert "acknowledge smoke (g-cq4)" in on.json()["detail"]
    assert not any(c.action.value == "power_on" for c in cs.commands)
    items = (await api.http.get("/api/cutoffs", headers=bearer(staff))).json()["items"]
    ports = {i["port"]: i["switch_on_blocked"] for i in items if i["device"] == "cs-01"}
    assert sorted(ports) == list(range(1, 11))  # the whole station, one item per port
    smoke_first = {
        "reason": "unacknowledged",
        "rule": "smoke",
        "subject": "g-cq4",
        "alert_id": alert_id,
    }
    assert all(blocked == [smoke_first] for blocked in ports.values()), ports
    await api.http.post(f"/api/alerts/{alert_id}/ack", headers=bearer(staff))
    on = await api.http.post(path, json={"on": True}, headers=bearer(staff))
    assert on.status_code == 200, on.text


async def test_no_command_is_published_to_a_station_known_offline(
    api: Api, stations, gates, observer: Observer
) -> None:
    cs04, cs05 = stations("cs-04"), stations("cs-05")
    for cs in (cs04, cs05):
        cs.publish_raw(telemetry(1, [port(1, "charging")]))
    cs04.client.publish_raw("facilities/charging/cs-04/availability", "offline").wait_for_publish(5)
    await wait_for(
        lambda: api.service.live.read(lambda e: e.stations["cs-04"].online) is False,
        what="cs-04 known offline",
    )
    garage = gates("g-cq8")
    garage.client.publish_raw(
        "facilities/garage/g-cq8/telemetry",
        json.dumps({"seq": 1, "ts": time.time(), "smoke": True}),
    ).wait_for_publish(5)
    cs04_commands = "facilities/charging/cs-04/command"
    await wait_for(
        lambda: len(observer.on("facilities/charging/cs-05/command")) == 1,
        what="cs-05 (online) powered off",
    )
    await wait_for(lambda: len(garage.commands) == 1, what="the gate opened")
    assert observer.on(cs04_commands) == []
    assert cs04.commands == []
    # still nothing while it stays offline
    cs05.publish_raw(telemetry(2, [port(1, "disabled")]))
    await wait_for(
        lambda: (
            api.service.live.read(lambda e: e.stations["cs-05"].ports[1].state.value) == "disabled"
        ),
        what="cs-05 reported",
    )
    assert observer.on(cs04_commands) == []
    cs04.client.publish_raw("facilities/charging/cs-04/availability", "online").wait_for_publish(5)
    await wait_for(lambda: len(observer.on(cs04_commands)) == 1, what="the cut once back")
    (command,) = observer.on(cs04_commands)
    assert (command["action"], command.get("port"), command["reason"]) == (
        "power_off",
        None,
        "smoke",
    )
    await wait_for(lambda: len(cs04.commands) == 1, what="cs-04 got it")


async def test_staff_see_what_the_service_switched_off_until_it_is_back_on(
    api: Api, stations
) -> None:
    _, staff = await api.person(Role.STAFF, "物业 陈经理")
    cs = stations("cs-08")
    before = time.time()
    alert_id = await _cut_hot_port(api, cs, 3)
    listed = await api.http.get("/api/cutoffs", headers=bearer(staff))
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert (item["device"], item["kind"], item["port"], item["rule"], item["alert_id"]) == (
        "cs-08",
        "port_off",
        3,
        "port_over_temperature",
        alert_id,
    )
    assert (item["held"], item["whole_station"]) == (True, False)
    assert item["switch_on"] == "POST /api/stations/cs-08/ports/3/power"
    since = datetime.fromisoformat(item["since"]).timestamp()
    assert before - 1 <= since <= time.time() + 1
    assert (await api.http.get("/api/cutoffs")).status_code == 401
    await api.http.post(f"/api/alerts/{alert_id}/ack", headers=bearer(staff))
    cs.model.ports[2].temp_c = COOL_C
    cs.publish_raw(telemetry(2, [port(3, "disabled", temp_c=COOL_C)]))
    await wait_for(
        lambda: api.service.live.read(lambda e: e.stations["cs-08"].ports[3].temp_c) == COOL_C,
        what="the cool reading",
    )
    # acknowledged, not firing: still listed (still off), no longer held after the power-on
    assert len((await api.http.get("/api/cutoffs", headers=bearer(staff))).json()["items"]) == 1
    on = await api.http.post(
        "/api/stations/cs-08/ports/3/power", json={"on": True}, headers=bearer(staff)
    )
    assert on.status_code == 200, on.text
    await wait_for(
        lambda: api.service.live.read(lambda e: e.stations["cs-08"].ports[3].state.value) == "idle",
        what="the port reported back on",
    )
    assert (await api.http.get("/api/cutoffs", headers=bearer(staff))).json()["items"] == []


async def test_the_list_says_what_keeps_a_port_off_as_the_power_route_decides(
    api: Api, stations
) -> None:
    """`switch_on_blocked` of `GET /api/cutoffs` (the console offers "Switch on" only when
    it is empty) comes from the power route's own guards: at each step a power-on is
    refused exactly while the list names a reason."""
    _, staff = await api.person(Role.STAFF, "物业 陈经理")
    cs = stations("cs-10")
    alert_id = await _cut_hot_port(api, cs, 4)
    path = "/api/stations/cs-10/ports/4/power"

    async def report(seq: int, temp_c: float) -> None:
        cs.model.ports[3].temp_c = temp_c
        cs.publish_raw(telemetry(seq, [port(4, "disabled", temp_c=temp_c)]))
        await wait_for(
            lambda: api.service.live.read(lambda e: e.stations["cs-10"].ports[4].temp_c) == temp_c,
            what=f"the reading of {temp_c} °C",
        )

    async def blocked() -> list[tuple[str, str | None, str, str | None]]:
        (item,) = (await api.http.get("/api/cutoffs", headers=bearer(staff))).json()["items"]
        return [
            (b["reason"], b["rule"], b["subject"], b["alert_id"]) for b in item["switch_on_blocked"]
        ]

    async def refused(why: str) -> None:
        answer = await api.http.post(path, json={"on": True}, headers=bearer(staff))
        assert answer.status_code == 409, answer.text
        assert why in answer.json()["detail"]

    await report(2, HOT_C)  # still hot, and nobody has looked
    assert await blocked() == [
        ("unacknowledged", "port_over_temperature", "cs-10/4", alert_id),
        ("firing", "port_over_temperature", "cs-10/4", None),
    ]
    await refused("acknowledge port_over_temperature (cs-10/4)")
    await api.http.post(f"/api/alerts/{alert_id}/ack", headers=bearer(staff))
    assert await blocked() == [("firing", "port_over_temperature", "cs-10/4", None)]
    await refused("port_over_temperature (cs-10/4) still over its limit")
    await report(3, COOL_C)
    assert await blocked() == []
    # the station goes away: a power-on would wait in its broker session
    cs.client.publish_raw("facilities/charging/cs-10/availability", "offline").wait_for_publish(5)
    await wait_for(
        lambda: api.service.live.read(lambda e: e.stations["cs-10"].online) is False,
        what="cs-10 known offline",
    )
    assert await blocked() == [("offline", None, "cs-10", None)]
    await refused("cs-10 is offline")
    cs.publish_raw(telemetry(4, [port(4, "disabled", temp_c=COOL_C)]))  # back
    await wait_for(
        lambda: api.service.live.read(lambda e: e.stations["cs-10"].online) is True,
        what="cs-10 back",
    )
    assert await blocked() == []
    on = await api.http.post(path, json={"on": True}, headers=bearer(staff))
    assert on.status_code == 200, on.text
    await wait_for(
        lambda: api.service.live.read(lambda e: e.stations["cs-10"].ports[4].state.value) == "idle",
        what="the port reported back on",
    )
    assert (await api.http.get("/api/cutoffs", headers=bearer(staff))).json()["items"] == []


async def test_the_desired_state_survives_a_restart(
    settings: Settings, site: Site, broker: PrivateBroker
) -> None:
    client = DeviceClient(BrokerUrl.parse(broker.url("cs-10")), client_id="cs-10").connect()
    station = SimulatedStation(
        client, StationModel("cs-10", [PortModel(n) for n in range(1, 11)]), Topics()
    )
    try:
        first = build(settings, site)
        async with run(first):
            await wait_for(lambda: first.link.subscribed, what="subscription")
            station.publish_raw(telemetry(1, [port(4, "charging")], leakage_ma=35.0))
            await wait_for(lambda: len(_offs(station, None)) == 1, what="the station cut")
            await wait_for(
                lambda: query(settings.db, "SELECT outcome FROM commands") == [("acked",)],
                what="the ack",
            )
        stored = query(settings.db, "SELECT DISTINCT rule, held FROM cutoffs")
        assert stored == [("leakage", 1)]
        second = build(settings, site)
        async with run(second):
            await wait_for(lambda: second.link.subscribed, what="subscription")
            held = second.live.read(lambda e: [c.port for c in e.desired if c.held])
            assert held == list(range(1, 11))
            # while the service was down the station rebooted: every port on again
            station.model.power_on(None)
            station.publish_raw(telemetry(0, [port(4, "idle")], leakage_ma=35.0))
            await wait_for(lambda: len(_offs(station, None)) == 2, what="cut again")
    finally:
        client.close()


async def test_staff_power_to_a_station_known_offline_is_refused_and_not_queued(
    api: Api, stations, observer: Observer
) -> None:
    _, staff = await api.person(Role.STAFF, "物业 陈经理")
    cs = stations("cs-16")
    cs.publish_raw(telemetry(1, [port(1)]))
    cs.client.publish_raw("facilities/charging/cs-16/availability", "offline").wait_for_publish(5)
    await wait_for(
        lambda: api.service.live.read(lambda e: e.stations["cs-16"].online) is False,
        what="cs-16 known offline",
    )
    for on in (False, True):
        answer = await api.http.post(
            "/api/stations/cs-16/ports/1/power", json={"on": on}, headers=bearer(staff)
        )
        assert answer.status_code == 409, answer.text
        assert "offline" in answer.json()["detail"]
    cs.publish_raw(telemetry(2, [port(1)]))  # back: a later command goes through
    await wait_for(
        lambda: api.service.live.read(lambda e: e.stations["cs-16"].online) is True,
        what="cs-16 back",
    )
    assert observer.on("facilities/charging/cs-16/command") == []
    off = await api.http.post(
        "/api/stations/cs-16/ports/1/power", json={"on": False}, headers=bearer(staff)
    )
    assert off.status_code == 200, off.text
    # the station and the observer are two subscribers: the station's ack can come first
    await wait_for(
        lambda: observer.on("facilities/charging/cs-16/command") != [], what="observer sees it"
    )
    assert [c["action"] for c in observer.on("facilities/charging/cs-16/command")] == ["power_off"]


@pytest.mark.slow
async def test_a_sigkilled_service_still_cuts_a_rebooted_station_again(
    tmp_path: Path, broker: PrivateBroker, site: Site, store_target: str
) -> None:
    clear_retained_status(broker, site)
    db = store_target
    client = DeviceClient(BrokerUrl.parse(broker.url("cs-11")), client_id="cs-11").connect()
    station = SimulatedStation(
        client, StationModel("cs-11", [PortModel(n) for n in range(1, 11)]), Topics()
    )
    client_id = f"killed-{uuid.uuid4().hex[:6]}"
    service = ServiceProcess(broker, db, client_id=client_id, log=tmp_path / "service.log")
    try:
        service.start()
        station.model.ports[5].temp_c = HOT_C
        station.publish_raw(telemetry(1, [port(6, "charging", temp_c=HOT_C)]))
        await wait_for(lambda: len(_offs(station, 6)) == 1, what="the first cut")
        await wait_for(
            lambda: query(db, "SELECT outcome FROM commands") == [("acked",)], what="its ack"
        )
        service.kill()
        # down: the station reboots and switches every port on. Its socket has cooled under
        # the limit (the rule no longer fires) but the alert is open: the stored cut-off holds
        station.model.power_on(None)
        station.model.ports[5].temp_c = COOL_C
        service.start()
        station.publish_raw(telemetry(0, [port(6, "idle", temp_c=COOL_C)]))
        await wait_for(lambda: len(_offs(station, 6)) == 2, what="cut again after the restart")
        await wait_for(
            lambda: (
                query(db, "SELECT outcome FROM commands ORDER BY sent_at")
                == [("acked",), ("acked",)]
            ),
            what="the second ack",
        )
    finally:
        if service.process is not None and service.process.poll() is None:
            service.terminate()
        client.close()


async def test_a_cut_the_station_refused_leaves_no_port_free(api: Api, stations) -> None:
    """Leakage at a station whose relay is stuck: the cut is refused, the ports still report
    `idle`, and none of them is shown free (API and metrics) while the alert is open."""
    cs = stations("cs-09", Behaviour.REFUSE)
    cs.publish_raw(telemetry(1, [port(n) for n in range(1, 11)], leakage_ma=45.0))
    db = api.service.settings.db
    await wait_for(
        lambda: (
            query(db, "SELECT outcome FROM commands WHERE reason = 'leakage'") == [("refused",)]
        ),
        what="the refused cut",
    )
    await wait_for(
        lambda: api.service.live.read(lambda e: ("command_failed", "cs-09") in e.alerts),
        what="command_failed raised",
    )
    body = (await api.http.get("/api/stations/cs-09")).json()
    assert [p["state"] for p in body["ports"]] == ["idle"] * 10
    assert [p["free"] for p in body["ports"]] == [False] * 10
    assert body["ports_free"] == 0
    listed = next(s for s in (await api.http.get("/api/stations")).json() if s["id"] == "cs-09")
    assert listed["ports_free"] == 0
    metrics = (await api.http.get("/metrics")).text
    free = [
        line
        for line in metrics.splitlines()
        if line.startswith("facilities_port_free{") and 'station="cs-09"' in line
    ]
    assert len(free) == 10 and all(line.endswith(" 0.0") for line in free), free
