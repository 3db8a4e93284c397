"""Each safety rule end to end, through the real broker: a device publishes the telemetry
that trips it; the service raises the alert and sends power_off; the simulated station
obeys, acks, and reports the port disabled."""

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl
from facilities.mqtt.topics import Topics
from facilities.service import Service, run
from facilities.settings import Settings
from facilities.site import Site
from facilities.wiring import build
from simulators.client import DeviceClient
from simulators.devices import Behaviour, SimulatedGarage, SimulatedStation
from tests.support.db import query
from tests.support.payloads import Body, reading, telemetry
from tests.support.poll import wait_for


def _charging(port: int, **fields: object) -> Body:
    """A port charging at 300 W and 30 °C, unless told otherwise."""
    return reading(
        port, **{"voltage_v": 230.0, "power_w": 300.0, "energy_wh": 20.0, "temp_c": 30.0, **fields}
    )


async def _until(
    db: Path, sql: str, params: tuple[object, ...], expected: list[tuple[object, ...]], what: str
) -> None:
    await wait_for(lambda: query(db, sql, *params) == expected, what=what)


async def _assert_cut(
    service: Service, station: SimulatedStation, rule: str, subject: str, port: int | None
) -> None:
    db = service.settings.db
    await _until(
        db,
        "SELECT rule, subject, severity, state FROM alerts WHERE rule = ?",
        (rule,),
        [(rule, subject, "critical", "active")],
        f"{rule} alert",
    )
    await wait_for(
        lambda: any(c.action.value == "power_off" and c.port == port for c in station.commands),
        what="power_off at the station",
    )
    await _until(
        db,
        "SELECT action, port, outcome FROM commands WHERE reason = ?",
        (rule,),
        [("power_off", port, "acked")],
        "the ack",
    )
    checked = [port] if port is not None else list(range(1, 11))
    for n in checked:
        await _until(
            db,
            "SELECT state FROM port_samples"
            " WHERE station = ? AND port = ? ORDER BY ts DESC, seq DESC LIMIT 1",
            (station.model.station, n),
            [("disabled",)],
            f"port {n} reported disabled",
        )


SAFETY = [
    # (rule, station, messages, subject, port switched off (None: the whole station))
    (
        "port_overload",
        "cs-05",
        [
            telemetry(1, [_charging(3, power_w=1200.0)]),
            telemetry(2, [_charging(3, power_w=1210.0)]),
        ],
        "cs-05/3",
        3,
    ),
    (
        "station_overload",
        "cs-06",
        [telemetry(s, [_charging(n, power_w=950.0) for n in range(1, 9)]) for s in (1, 2)],
        "cs-06",
        8,
    ),
    ("port_over_temperature", "cs-07", [telemetry(1, [_charging(2, temp_c=65.0)])], "cs-07/2", 2),
    ("over_temperature", "cs-08", [telemetry(1, [_charging(1)], temp_c=62.0)], "cs-08", None),
    (
        "temperature_rise",
        "cs-09",
        [telemetry(1, [_charging(1, temp_c=30.0)]), telemetry(2, [_charging(1, temp_c=41.0)])],
        "cs-09/1",
        1,
    ),
    ("leakage", "cs-10", [telemetry(1, [_charging(1)], leakage_ma=35.0)], "cs-10", None),
    ("smoke", "cs-11", [telemetry(1, [_charging(1)], smoke=True)], "cs-11", None),
]


@pytest.mark.parametrize(
    ("rule", "station_id", "messages", "subject", "port"), SAFETY, ids=[s[0] for s in SAFETY]
)
async def test_a_safety_rule_cuts_power(
    service: Service, stations, rule, station_id, messages, subject, port
) -> None:
    station = stations(station_id)
    for body in messages:
        station.publish_raw(body)
    await _assert_cut(service, station, rule, subject, port)


async def test_garage_smoke_cuts_its_stations_and_opens_its_gates(
    service: Service, stations, broker: PrivateBroker
) -> None:
    inside = [stations("cs-01"), stations("cs-02")]
    outside = stations("cs-03")  # in the same community, not in the garage
    client = DeviceClient(BrokerUrl.parse(broker.url("g-cq4")), client_id="g-cq4").connect()
    try:
        garage = SimulatedGarage(client, "g-cq4", ("north", "south"), Topics())
        client.publish_raw(
            "facilities/garage/g-cq4/telemetry",
            json.dumps({"seq": 1, "ts": time.time(), "smoke": True, "occupancy": 80}),
        )
        db = service.settings.db
        await _until(
            db,
            "SELECT rule, subject FROM alerts WHERE rule = 'smoke'",
            (),
            [("smoke", "g-cq4")],
            "garage smoke alert",
        )
        for station in inside:
            await wait_for(
                lambda s=station: any(c.port is None for c in s.commands),
                what=f"{station.model.station} powered off",
            )
        await wait_for(
            lambda: (
                {c.action.value for c in garage.commands} == {"open"} and len(garage.commands) == 2
            ),
            what="both gates opened",
        )
        await _until(
            db,
            "SELECT device, gate, outcome FROM commands WHERE action = 'open' ORDER BY gate",
            (),
            [("g-cq4", "north", "acked"), ("g-cq4", "south", "acked")],
            "gate acks",
        )
        assert outside.commands == []
    finally:
        client.close()


@pytest.fixture
async def impatient(settings: Settings, site: Site, tmp_path: Path) -> AsyncIterator[Service]:
    """The service with cs-12's and cs-13's commands timing out after 0.2 s (3 tries)."""
    stations = dict(site.stations)
    for sid in ("cs-12", "cs-13"):
        fast = stations[sid].thresholds.merged({"command_timeout_s": 0.2})
        stations[sid] = replace(stations[sid], thresholds=fast)
    quick = replace(site, stations=stations)
    running = build(settings, quick)
    async with run(running):
        await wait_for(lambda: running.link.subscribed, what="subscription")
        yield running


@pytest.mark.parametrize(
    ("station_id", "behaviour", "outcome", "tries"),
    [
        ("cs-12", Behaviour.IGNORE, "timeout", 3),
        ("cs-13", Behaviour.REFUSE, "refused", 1),
    ],
)
async def test_a_command_that_is_not_carried_out_raises_command_failed(
    impatient: Service, stations, station_id, behaviour, outcome, tries
) -> None:
    station = stations(station_id, behaviour)
    station.publish_raw(telemetry(1, [_charging(1)], leakage_ma=40.0))
    db = impatient.settings.db
    await _until(
        db,
        "SELECT rule, subject, severity FROM alerts WHERE rule = 'command_failed'",
        (),
        [("command_failed", station_id, "critical")],
        "command_failed alert",
    )
    assert query(db, "SELECT outcome, tries FROM commands") == [(outcome, tries)]
    # the last try is on its way to the station when the service gives up on it
    await wait_for(lambda: len(station.commands) == tries, what=f"{tries} tries at the station")
    assert len({c.id for c in station.commands}) == 1  # retries carry the same id


async def test_alerts_are_published_on_mqtt(service: Service, stations, broker) -> None:
    import json as _json

    seen: list[tuple[str, bytes]] = []
    observer = DeviceClient(
        BrokerUrl.parse(broker.url(broker.new_user_like("observer"))), client_id="observer"
    ).connect()
    try:
        observer.subscribe("facilities/alerts/#", lambda t, p: seen.append((t, p)))
        station = stations("cs-14")
        station.publish_raw(telemetry(1, [_charging(1)], smoke=True))
        await wait_for(
            lambda: any(t == "facilities/alerts/smoke/cs-14" for t, _ in seen), what="alert on MQTT"
        )
        body = _json.loads(next(p for t, p in seen if t == "facilities/alerts/smoke/cs-14"))
        assert (body["rule"], body["subject"], body["severity"], body["state"], body["change"]) == (
            "smoke",
            "cs-14",
            "critical",
            "active",
            "raised",
        )
        assert body["actions"] == [
            {"action": "power_off_station", "device": "cs-14", "port": None, "gate": None}
        ]
    finally:
        observer.close()


async def test_a_redelivered_message_is_not_new_evidence(service: Service, stations) -> None:
    station = stations("cs-15")
    first = telemetry(1, [_charging(1)], leakage_ma=31.0)
    station.publish_raw(first)
    station.publish_raw(telemetry(2, [_charging(1)], leakage_ma=33.0))
    station.publish_raw(first)  # what the broker redelivers after a lost link
    db = service.settings.db
    await wait_for(lambda: service.ingest.committed >= 3, what="3 messages")
    await service.rules.tick()  # repeated evidence is stored on the tick
    await _until(
        db,
        "SELECT count, peak FROM alerts WHERE rule = 'leakage'",
        (),
        [(2, 33.0)],
        "two pieces of evidence, not three",
    )
