"""Commands that fail reach a person every time, and no command can act late: through the
real app, the real broker and simulated stations (docs/rules.md, docs/protocol.md)."""

import math
from collections.abc import Iterator
from typing import Any

import pytest

from facilities.access import Role
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.commands import EXPIRES_MARGIN_S
from simulators.devices import Behaviour
from tests.api_support import QUICK_TIMEOUT_S, Api, bearer
from tests.support.payloads import port, telemetry
from tests.support.poll import wait_for
from tests.test_api_gates import Commands

POWER = "/api/stations/{}/ports/{}/power"


@pytest.fixture
def failures(broker: PrivateBroker) -> Iterator[Commands]:
    """Every `command_failed` alert published on MQTT, as a wall display sees them."""
    observer = Commands(broker, "facilities/alerts/command_failed/#")
    yield observer
    observer.close()


@pytest.fixture
def sent(broker: PrivateBroker) -> Iterator[Commands]:
    """Every command to a station or a gate, with its MQTT 5 properties."""
    observer = Commands(
        broker, "facilities/charging/+/command", "facilities/garage/+/gate/+/command"
    )
    yield observer
    observer.close()


def _changes(observer: Commands) -> list[tuple[str, str, str]]:
    return [(body["subject"], body["state"], body["change"]) for _t, body, _p in observer.seen]


async def _active(api: Api, token: str) -> list[tuple[str, str]]:
    page = (await api.http.get("/api/alerts?state=active", headers=bearer(token))).json()
    return [(a["rule"], a["subject"]) for a in page["items"]]


async def _until_active(api: Api, token: str, rule: str, subject: str) -> None:
    """The API lists what is stored; an alert is published before it is stored."""

    async def active() -> bool:
        return (rule, subject) in await _active(api, token)

    await wait_for(active, what=f"{rule} {subject} active in the API", interval_s=0.02)


async def _acknowledge(api: Api, token: str, rule: str, subject: str) -> None:
    await _until_active(api, token, rule, subject)
    page = (await api.http.get("/api/alerts?state=active", headers=bearer(token))).json()
    (alert,) = [a for a in page["items"] if (a["rule"], a["subject"]) == (rule, subject)]
    acked = await api.http.post(f"/api/alerts/{alert['id']}/ack", headers=bearer(token))
    assert acked.status_code == 200, acked.text


@pytest.mark.slow
async def test_a_staff_power_off_that_times_out_raises_command_failed_every_time(
    api: Api, stations: Any, failures: Commands
) -> None:
    _staff_id, staff = await api.person(Role.STAFF, "值班 李")
    stations("cs-04", Behaviour.IGNORE)
    off = await api.http.post(POWER.format("cs-04", 3), json={"on": False}, headers=bearer(staff))
    assert off.status_code == 504, off.text
    await wait_for(lambda: failures.count() == 1, what="command_failed published")
    assert _changes(failures) == [("cs-04/3", "active", "raised")]
    await _until_active(api, staff, "command_failed", "cs-04/3")

    await _acknowledge(api, staff, "command_failed", "cs-04/3")
    await wait_for(lambda: failures.count() == 2, what="acknowledgement published")
    again = await api.http.post(POWER.format("cs-04", 3), json={"on": False}, headers=bearer(staff))
    assert again.status_code == 504, again.text
    # a new failure after an acknowledged one is raised again: published, active, blocking
    await wait_for(lambda: failures.count() == 3, what="the second failure published")
    assert _changes(failures)[2][:2] == ("cs-04/3", "active")
    await _until_active(api, staff, "command_failed", "cs-04/3")
    on = await api.http.post(POWER.format("cs-04", 3), json={"on": True}, headers=bearer(staff))
    assert on.status_code == 409, on.text
    assert "command_failed (cs-04/3)" in on.json()["detail"]


@pytest.mark.slow
async def test_a_second_failed_cut_after_an_acknowledgement_is_raised_again(
    api: Api, stations: Any, failures: Commands
) -> None:
    _staff_id, staff = await api.person(Role.STAFF, "值班 王")
    cs = stations("cs-05", Behaviour.IGNORE)
    cs.publish_raw(telemetry(1, [port(2, "charging")], leakage_ma=40.0))
    await wait_for(lambda: failures.count() == 1, what="the first cut failed")
    assert _changes(failures) == [("cs-05", "active", "raised")]
    await _acknowledge(api, staff, "command_failed", "cs-05")
    await wait_for(lambda: failures.count() == 2, what="acknowledgement published")

    cs.publish_raw(telemetry(2, [port(2, "charging")], leakage_ma=40.0, smoke=True))
    await wait_for(lambda: failures.count() == 3, what="the second failed cut published")
    assert _changes(failures)[2][:2] == ("cs-05", "active")
    await _until_active(api, staff, "command_failed", "cs-05")
    on = await api.http.post(POWER.format("cs-05", 2), json={"on": True}, headers=bearer(staff))
    assert on.status_code == 409, on.text
    assert "command_failed (cs-05)" in on.json()["detail"]


async def test_every_command_carries_expires_and_a_message_expiry(
    api: Api, stations: Any, gates: Any, sent: Commands
) -> None:
    _staff_id, staff = await api.person(Role.STAFF, "值班 赵")
    _resident, resident = await api.person(Role.RESIDENT, "王阿姨", "g-cq4")
    cs = stations("cs-07")
    gates("g-cq4")
    cs.publish_raw(telemetry(1, [port(2, "charging", temp_c=65.0)]))  # rules: port 2 off
    await wait_for(lambda: sent.count() == 1, what="the rules' power_off")
    await _acknowledge(api, staff, "port_over_temperature", "cs-07/2")
    for on in (True, False):
        answer = await api.http.post(
            POWER.format("cs-07", 2), json={"on": on}, headers=bearer(staff)
        )
        assert answer.status_code == 200, answer.text
    opened = await api.http.post("/api/garages/g-cq4/gates/north/open", headers=bearer(resident))
    assert opened.status_code == 200, opened.text
    await wait_for(lambda: sent.count() == 4, what="four commands")
    assert [body["action"] for _t, body, _p in sent.seen] == [
        "power_off",
        "power_on",
        "power_off",
        "open",
    ]
    for _topic, body, properties in sent.seen:
        # one try for each in the test's site: the device may act until a little after it
        assert body["expires"] == pytest.approx(body["ts"] + QUICK_TIMEOUT_S + EXPIRES_MARGIN_S)
        assert properties.MessageExpiryInterval == math.ceil(body["expires"] - body["ts"])
