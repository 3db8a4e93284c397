"""Simulated devices: realistic curves, valid payloads, their own credentials."""

import asyncio
import contextlib
import json
import random
import time
import uuid

import pytest

from facilities.charging.payloads import PortState, StationEventType
from facilities.errors import OperatorError
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl
from facilities.mqtt.topics import Topics
from facilities.service import Service
from simulators.charging import PortModel, StationModel
from simulators.client import DeviceClient
from simulators.devices import SimulatedGarage, SimulatedStation
from simulators.fleet import Fleet
from simulators.garage import GarageModel
from tests.support.db import query
from tests.support.poll import wait_for
from tests.support.processes import start_broker


def test_a_charge_tapers_from_a_few_hundred_watts_to_a_trickle() -> None:
    rng = random.Random(7)
    model = StationModel("cs-01", [PortModel(1)])
    model.ports[0].plug_in(rng)
    model.ports[0].soc = 0.1
    powers, states = [], []
    for _ in range(24 * 360):  # a day in 10 s steps
        model.advance(10.0, 20.0, rng)
        powers.append(model.ports[0].power_w)
        states.append(model.ports[0].state)
        if model.ports[0].state is PortState.IDLE:
            break
    charging = [p for p, s in zip(powers, states, strict=True) if s is PortState.CHARGING]
    assert 140 <= max(charging) <= 370  # a few hundred watts
    assert min(charging) < max(charging) / 2  # tapering near full
    full = [p for p, s in zip(powers, states, strict=True) if s is PortState.FULL]
    assert full and max(full) < 5  # a trickle once full
    kinds = [kind for _port, kind in model.pending_events]
    assert kinds == [StationEventType.CHARGE_COMPLETE, StationEventType.UNPLUG]


def test_a_healthy_socket_warms_slowly_and_less_than_the_rules_rise(site) -> None:
    """The largest charger (350 W, at +3 % noise) warms its socket by less than the
    `temperature_rise` rule's 10 °C, over many minutes; compressed simulated time moves
    the warming by the device's own clock, not by the simulated one."""
    rng = random.Random(2)
    model = StationModel("cs-01", [PortModel(1, temp_c=24.0)], ambient_c=24.0)
    model.ports[0].plug_in(rng)
    model.ports[0].cc_power_w, model.ports[0].soc = 350.0, 0.05
    temps = [model.ports[0].temp_c]
    for _ in range(360):  # an hour in 10 s steps
        model.advance(10.0, 20.0, rng)
        temps.append(model.ports[0].temp_c)
    rise = max(temps) - model.ambient_c
    assert 4.0 < rise < site.thresholds.temp_rise_c / 2 + 0.5
    per_minute = max(b - a for a, b in zip(temps, temps[6:], strict=False))
    assert per_minute < 0.5  # °C in any 60 s: nowhere near the rule's 10 °C
    halfway = next(i for i, t in enumerate(temps) if t - model.ambient_c >= rise / 2)
    assert halfway * 10.0 > 8 * 60  # more than 8 minutes to warm half way

    # 10 minutes of the simulated day that took 10 s on the station's clock warm the socket
    # by what 10 s do, not by what 10 minutes would
    def warming(**clock: float) -> float:
        station = StationModel("cs-02", [PortModel(1, temp_c=24.0)], ambient_c=24.0)
        station.ports[0].plug_in(rng)
        station.ports[0].cc_power_w, station.ports[0].soc = 350.0, 0.05
        station.advance(600.0, 20.0, rng, **clock)
        return station.ports[0].temp_c - 24.0

    assert warming(device_dt_s=10.0) < 0.1
    assert warming() > 2.0


def test_evenings_are_busier_than_mornings() -> None:
    def plug_ins(hour: float) -> int:
        rng = random.Random(1)
        model = StationModel("cs-01", [PortModel(n) for n in range(1, 11)])
        count = 0
        for _ in range(100):
            for port in model.ports:
                port.unplug()
            model.advance(600.0, hour, rng)
            count += sum(1 for e in model.take_events(1.0) if e.type is StationEventType.PLUG_IN)
        return count

    assert plug_ins(20.0) > 2 * plug_ins(4.0)


def test_garage_occupancy_follows_the_day_and_stays_in_bounds() -> None:
    rng = random.Random(3)
    garage = GarageModel.new("g-cq4", 120, ("north", "south"), hour=3.0)
    night = garage.occupancy
    for _ in range(360):  # from 03:00 to 09:00 in 1 min steps
        garage.advance(60.0, 3.0 + _ / 60.0, rng)
        assert 0 <= garage.occupancy <= 120
    assert garage.occupancy < night
    events = garage.take_events(1.0)
    assert {e.type.value for _g, e in events} >= {"exit", "opened", "closed"}


async def test_the_fleet_publishes_valid_messages_as_each_device(
    broker: PrivateBroker, service: Service, site
) -> None:
    fleet = Fleet(
        site, BrokerUrl.parse(broker.url()), credentials=broker.credentials, speed=100.0, seed=5
    )
    await asyncio.to_thread(fleet.connect)
    try:
        runner = asyncio.create_task(fleet.run())
        await wait_for(lambda: service.ingest.committed >= 150, timeout_s=30, what="150 messages")
        runner.cancel()
    finally:
        fleet.close()
    db = service.settings.db
    assert service.ingest.quarantined == 0
    stations = query(db, "SELECT count(DISTINCT station) FROM station_samples")[0][0]
    garages = query(db, "SELECT count(DISTINCT garage) FROM garage_samples")[0][0]
    assert (stations, garages) == (20, 5)
    ports = query(db, "SELECT count(DISTINCT port) FROM port_samples WHERE station = 'cs-01'")
    assert ports == [(10,)]


@pytest.mark.parametrize(
    ("scenario", "rule", "subject", "action"),
    [
        ("overload", "port_overload", "cs-01/1", "power_off"),
        ("overheat", "port_over_temperature", "cs-01/1", "power_off"),
        ("leakage", "leakage", "cs-01", "power_off"),
        ("smoke", "smoke", "cs-01", "power_off"),
        ("garage-smoke", "smoke", "g-cq4", "open"),
    ],
)
async def test_fault_scenarios_trip_the_rules_and_the_devices_obey(
    broker: PrivateBroker, service: Service, site, scenario, rule, subject, action
) -> None:
    fleet = Fleet(
        site,
        BrokerUrl.parse(broker.url()),
        credentials=broker.credentials,
        speed=100.0,
        seed=1,
        scenario=scenario,
        fault_after_s=0.3,
    )
    await asyncio.to_thread(fleet.connect)
    db = service.settings.db
    try:
        runner = asyncio.create_task(fleet.run())
        await wait_for(
            lambda: (
                (rule, subject)
                in {(r, s) for r, s in query(db, "SELECT rule, subject FROM alerts")}
            ),
            timeout_s=20,
            what=f"{rule} on {subject}",
        )
        await wait_for(
            lambda: (action, "acked") in set(query(db, "SELECT action, outcome FROM commands")),
            timeout_s=20,
            what=f"{action} acked",
        )
        runner.cancel()
    finally:
        fleet.close()


def test_an_unknown_scenario_is_refused(site) -> None:
    with pytest.raises(OperatorError, match="known scenarios are normal, overload"):
        Fleet(site, BrokerUrl("127.0.0.1", 1), scenario="earthquake")


async def test_a_repeated_command_id_is_answered_again_but_carried_out_once(
    broker: PrivateBroker, device
) -> None:
    """docs/protocol.md, "Commands": a retry carries the same id; a device acts on it once (the simulated
    gates and stations behave as devices must)."""
    url = BrokerUrl.parse(broker.url("g-cq8"))
    client = DeviceClient(url, client_id=f"g-cq8-{uuid.uuid4().hex[:4]}").connect()
    acks: list[dict[str, object]] = []
    events: list[dict[str, object]] = []
    observer = device("observer")
    observer.subscribe(
        "facilities/garage/g-cq8/gate/main/command/ack", lambda _t, p: acks.append(json.loads(p))
    )
    observer.subscribe(
        "facilities/garage/g-cq8/gate/main/event", lambda _t, p: events.append(json.loads(p))
    )
    rogue = device("rogue")
    try:
        SimulatedGarage(client, "g-cq8", ("main",), Topics())
        command = {"id": "c-1", "ts": time.time(), "action": "open", "reason": "app"}
        for _ in range(2):
            rogue.publish_raw("facilities/garage/g-cq8/gate/main/command", json.dumps(command))
        await wait_for(lambda: len(acks) == 2, what="both copies answered")
        assert acks == [{"id": "c-1", "ok": True}] * 2
        late = {**command, "id": "c-2", "expires": time.time() - 1}
        rogue.publish_raw("facilities/garage/g-cq8/gate/main/command", json.dumps(late))
        await wait_for(lambda: len(acks) == 3, what="the late open answered")
        assert acks[2] == {"id": "c-2", "ok": False, "error": "expired"}
        assert [e["type"] for e in events] == ["opened"]  # once, for c-1 only
    finally:
        client.close()


async def test_a_simulated_station_never_acts_on_a_command_past_its_expiry(
    broker: PrivateBroker, device
) -> None:
    """docs/protocol.md: a device never acts on a command past `expires` (a power_on must not
    happen minutes or days late); the simulated station refuses it as `expired`."""
    url = BrokerUrl.parse(broker.url("cs-18"))
    client = DeviceClient(url, client_id=f"cs-18-{uuid.uuid4().hex[:4]}").connect()
    acks: list[dict[str, object]] = []
    observer = device("observer")
    observer.subscribe(
        "facilities/charging/cs-18/command/ack", lambda _t, p: acks.append(json.loads(p))
    )
    rogue = device("rogue")
    try:
        station = SimulatedStation(
            client, StationModel("cs-18", [PortModel(n) for n in range(1, 3)]), Topics()
        )
        station.model.power_off(1)
        late = {"id": "c-late", "ts": time.time() - 60, "action": "power_on", "port": 1}
        late["expires"] = time.time() - 1
        rogue.publish_raw("facilities/charging/cs-18/command", json.dumps(late))
        await wait_for(lambda: len(acks) == 1, what="the late power_on answered")
        assert acks == [{"id": "c-late", "ok": False, "error": "expired"}]
        assert station.model.ports[0].state is PortState.DISABLED
    finally:
        client.close()


def test_an_overload_injected_on_a_free_port_plugs_the_faulty_charger_in() -> None:
    """The overload scenario on a port with nothing plugged in used to divide by its empty
    pack in `advance` and stop the whole simulated fleet."""
    model = StationModel("cs-01", [PortModel(n) for n in range(1, 3)])
    model.overload_port = 1
    rng = random.Random(3)
    for _ in range(5):
        model.advance(10.0, 12.0, rng)
    assert model.ports[0].state is PortState.CHARGING
    assert model.ports[0].power_w == 1400.0


async def test_a_simulated_device_hears_commands_again_after_a_broker_restart(
    tmp_path, site
) -> None:
    """A clean-session device must subscribe again when paho reconnects after the broker
    restarted, or it never hears another command (a cut the service sends is lost)."""
    broker = start_broker(tmp_path / "broker", site)
    heard: list[bytes] = []
    client = DeviceClient(BrokerUrl.parse(broker.url("cs-02")), client_id="cs-02").connect()
    try:
        client.subscribe("facilities/charging/cs-02/command", lambda _t, p: heard.append(p))
        broker.stop()
        broker.start()  # same port, same credentials
        await wait_for(client.connected, timeout_s=20, what="the device reconnected")
        sender = DeviceClient(
            BrokerUrl.parse(broker.url(broker.new_user_like("rogue"))), client_id="rogue"
        ).connect()
        try:
            # the resubscription races the first publish: publish again until one is heard
            for _ in range(40):
                sender.publish_raw("facilities/charging/cs-02/command", b"{}").wait_for_publish(5)
                with contextlib.suppress(AssertionError):
                    await wait_for(lambda: len(heard) > 0, timeout_s=0.25, what="heard")
                    break
            assert heard, "no command heard after the broker restart"
        finally:
            sender.close()
    finally:
        client.close()
        broker.stop()
