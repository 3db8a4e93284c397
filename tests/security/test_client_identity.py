"""A device's password cannot take the service's MQTT identity (docs/security.md)."""

import asyncio
import json
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from facilities.broker_config import shipped_mosquitto_conf
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl, session_client_id
from facilities.service import Service, run
from facilities.settings import Settings
from facilities.site import Site
from facilities.wiring import build
from tests.support.db import query
from tests.support.devices import DeviceFactory
from tests.support.payloads import telemetry
from tests.support.poll import wait_for, wait_until

MESSAGES = 50


def _impostor(broker: PrivateBroker, user: str, client_id: str) -> paho.Client:
    """A client with `user`'s own password that claims `client_id`, on a clean session:
    on a broker that trusts the client id, it takes over (and wipes) that id's session."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv311,
        clean_session=True,
        reconnect_on_failure=False,
    )
    client.username_pw_set(user, broker.credentials[user])
    return client


def _connect_and_leave(client: paho.Client, broker: PrivateBroker, *, leave: bool = True) -> None:
    """Connect and wait for the CONNACK (in a thread: it blocks); then disconnect, or not."""
    connected: list[bool] = []
    client.on_connect = lambda *_args: connected.append(True)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        wait_until(lambda: connected, timeout_s=5, what="the CONNACK", interval_s=0.005)
        assert connected, "no CONNACK"
    finally:
        if leave or not connected:
            client.disconnect()
            client.loop_stop()


def _service_identities(settings: Settings) -> set[str]:
    """The client id the service asks for, and the broker user it runs as."""
    return {settings.client_id, BrokerUrl.parse(settings.broker).username or "", "facilities"}


def _telemetry(seq: int) -> str:
    return json.dumps(telemetry(seq))


def _stored(db: Path, station: str) -> int:
    rows = query(db, "SELECT count(*) FROM station_samples WHERE station = ?", station)
    count = rows[0][0]
    assert isinstance(count, int)
    return count


async def test_a_device_password_cannot_kick_the_service_off_the_broker(
    service: Service, settings: Settings, broker: PrivateBroker, device: DeviceFactory
) -> None:
    station = device("cs-03", client_id="cs-03")
    for seq in range(1, MESSAGES + 1):
        station.publish_raw("facilities/charging/cs-03/telemetry", _telemetry(seq))
        # between every few messages, cs-01's password claims the service's identity: the
        # id the service connected with, and the broker user it runs as
        if seq % 5 == 0:
            for claimed in _service_identities(settings):
                await asyncio.to_thread(
                    _connect_and_leave, _impostor(broker, "cs-01", claimed), broker
                )
    await wait_for(lambda: _stored(settings.db, "cs-03") == MESSAGES, what="all 50 stored")
    assert service.link.reconnects == 0
    assert service.link.connected


async def test_a_clean_session_under_the_service_id_keeps_its_backlog(
    settings: Settings, site: Site, broker: PrivateBroker, device: DeviceFactory
) -> None:
    first = build(settings, site)
    async with run(first):
        await wait_for(lambda: first.link.subscribed, what="subscription")
    # the service is away (an upgrade): the broker queues for its persistent session
    station = device("cs-04", client_id="cs-04")
    for seq in range(1, MESSAGES + 1):
        station.publish_raw(
            "facilities/charging/cs-04/telemetry", _telemetry(seq)
        ).wait_for_publish(5)
    for claimed in _service_identities(settings):
        await asyncio.to_thread(_connect_and_leave, _impostor(broker, "cs-01", claimed), broker)
    second = build(settings, site)
    async with run(second):
        await wait_for(lambda: _stored(settings.db, "cs-04") == MESSAGES, what="backlog stored")


async def test_a_device_password_cannot_kick_another_device(broker: PrivateBroker) -> None:
    victim = _impostor(broker, "cs-02", "cs-02")  # the real cs-02, which does not reconnect
    dropped: list[object] = []
    victim.on_disconnect = lambda *args: dropped.append(args)
    await asyncio.to_thread(_connect_and_leave, victim, broker, leave=False)
    try:
        for claimed in ("cs-02", "g-hc1"):
            impostor = _impostor(broker, "cs-01", claimed)
            await asyncio.to_thread(_connect_and_leave, impostor, broker)
        # a round trip after the impostors: a kicked cs-02 would get no PUBACK
        info = victim.publish("facilities/charging/cs-02/telemetry", _telemetry(1), qos=1)
        await asyncio.to_thread(info.wait_for_publish, 5)
        assert info.is_published()
        assert dropped == []
    finally:
        victim.disconnect()
        victim.loop_stop()


def test_every_listener_takes_the_client_id_from_the_user(broker: PrivateBroker) -> None:
    """The option is per listener: one left out would let any id through on that port."""
    for conf in (shipped_mosquitto_conf(), (broker.workdir / "mosquitto.conf").read_text()):
        lines = [line.strip() for line in conf.splitlines()]
        listeners = [n for n, line in enumerate(lines) if line.startswith("listener ")]
        assert listeners
        for start, end in zip(listeners, [*listeners[1:], len(lines)], strict=True):
            assert "use_username_as_clientid true" in lines[start:end]
        before = lines[: listeners[0]]
        assert not any(line.startswith("use_username_as_clientid") for line in before)


def test_the_service_connects_as_its_user_and_says_when_asked_otherwise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = BrokerUrl.parse("mqtt://svc-a:pw@127.0.0.1:1883")
    assert session_client_id(url) == "svc-a"
    assert not caplog.records
    assert session_client_id(url, "other") == "other"
    assert "uses the user name svc-a as client id" in caplog.text
