"""The shipped mosquitto.conf with the generated password file and ACL, on a real broker."""

import json
import time

import pytest

from facilities.errors import BrokerAuthError
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl
from simulators.client import DeviceClient
from tests.support.devices import DeviceFactory
from tests.support.payloads import telemetry
from tests.support.poll import wait_for


def _observe(device: DeviceFactory, topic: str) -> list[tuple[str, bytes]]:
    seen: list[tuple[str, bytes]] = []
    device("observer").subscribe(topic, lambda t, p: seen.append((t, p)))
    return seen


def _sample(seq: int) -> str:
    return json.dumps(telemetry(seq))


async def test_a_station_cannot_publish_under_another_id(device: DeviceFactory) -> None:
    seen = _observe(device, "facilities/charging/#")
    cs01 = device("cs-01", client_id="cs-01")
    cs01.publish_raw("facilities/charging/cs-02/telemetry", _sample(1)).wait_for_publish(5)
    cs01.publish_raw("facilities/charging/cs-02/availability", "offline").wait_for_publish(5)
    # a message cs-01 may send, published after: once it arrives, the forged ones would have
    cs01.publish_raw("facilities/charging/cs-01/telemetry", _sample(2)).wait_for_publish(5)
    await wait_for(lambda: any(t.endswith("cs-01/telemetry") for t, _ in seen), what="barrier")
    assert [t for t, _ in seen if "/cs-02/" in t] == []


async def test_a_station_reads_only_its_own_commands(
    device: DeviceFactory, broker: PrivateBroker
) -> None:
    got_01: list[str] = []
    got_02: list[str] = []
    cs01 = device("cs-01", client_id="cs-01")
    cs02 = device("cs-02", client_id="cs-02")
    cs01.subscribe("facilities/charging/+/command", lambda t, _p: got_01.append(t))
    cs02.subscribe("facilities/charging/cs-02/command", lambda t, _p: got_02.append(t))
    service = device("facilities")
    command = json.dumps({"id": "c1", "ts": time.time(), "action": "power_off", "port": 1})
    service.publish_raw("facilities/charging/cs-02/command", command).wait_for_publish(5)
    service.publish_raw("facilities/charging/cs-01/command", command).wait_for_publish(5)
    await wait_for(lambda: bool(got_02) and bool(got_01), what="commands delivered")
    assert got_01 == ["facilities/charging/cs-01/command"]
    assert got_02 == ["facilities/charging/cs-02/command"]


async def test_the_service_user_writes_only_commands(device: DeviceFactory) -> None:
    seen = _observe(device, "facilities/#")
    service = device("facilities")
    service.publish_raw("facilities/charging/cs-01/telemetry", _sample(1)).wait_for_publish(5)
    service.publish_raw("facilities/charging/cs-01/command", "{}").wait_for_publish(5)
    await wait_for(lambda: any(t.endswith("cs-01/command") for t, _ in seen), what="barrier")
    assert [t for t, _ in seen if t.endswith("telemetry")] == []


def test_anonymous_clients_are_refused(broker: PrivateBroker) -> None:
    anonymous = DeviceClient(BrokerUrl("127.0.0.1", broker.port), client_id="anon")
    with pytest.raises(BrokerAuthError):
        anonymous.connect()


def test_a_wrong_password_is_refused(broker: PrivateBroker) -> None:
    wrong = DeviceClient(
        BrokerUrl("127.0.0.1", broker.port, "cs-01", "not-the-password"), client_id="cs-01"
    )
    with pytest.raises(BrokerAuthError):
        wrong.connect()


def test_the_broker_runs_the_shipped_config(broker: PrivateBroker) -> None:
    conf = (broker.workdir / "mosquitto.conf").read_text()
    for line in (
        "allow_anonymous false",
        "max_queued_messages 200000",
        "persistence true",
        "max_inflight_messages 2000",
    ):
        assert line in conf.splitlines()
