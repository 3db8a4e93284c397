"""A compromised device against the running service, through the real broker: its forged
reports command only what it may reach, each command's audit names the message that caused
it, and staff hear of it at once (docs/security.md)."""

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from facilities.access import Role
from facilities.mosquitto import PrivateBroker
from tests.api_support import Api, bearer
from tests.support.db import query
from tests.support.devices import DeviceFactory
from tests.support.poll import wait_for

COMMANDS = ("facilities/charging/+/command", "facilities/garage/+/gate/+/command")


class Heard:
    """Every command and alert the broker delivers after it subscribed (a read-only user).
    Alerts that earlier tests' services left retained on the shared broker are not this
    test's: only alerts published since the subscription and updated since it count (an
    earlier test's clock may have run ahead)."""

    def __init__(self, device: DeviceFactory) -> None:
        self._since = datetime.now(UTC) - timedelta(seconds=1)
        self._lock = threading.Lock()
        self.messages: list[tuple[str, dict[str, Any]]] = []
        observer = device("observer")
        for topic in (*COMMANDS, "facilities/alerts/#"):
            observer.subscribe(topic, self._on_message, retained=False)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if payload:
            with self._lock:
                self.messages.append((topic, json.loads(payload)))

    def commanded(self) -> set[str]:
        """`cs-01`, `g-cq4/north`: who got a command."""
        with self._lock:
            topics = [t for t, _ in self.messages if t.endswith("/command")]
        return {t.split("/")[2] + (f"/{t.split('/')[4]}" if "/gate/" in t else "") for t in topics}

    def alerts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                body
                for topic, body in self.messages
                if topic.startswith("facilities/alerts/")
                and datetime.fromisoformat(body["updated_at"]) >= self._since
            ]


async def test_a_garage_controller_reaches_its_garage_only_and_the_audit_says_which_message(
    api: Api, device: DeviceFactory, broker: PrivateBroker
) -> None:
    heard = Heard(device)
    _, staff = await api.person(Role.STAFF, "night shift")
    controller = device("g-cq4", client_id="g-cq4")
    now = time.time()
    # a smoke report that also names another garage, other stations and gates
    forged = {"garage": "g-hc3", "station": "cs-20", "gate": "east", "device": "g-cq8"}
    body = {"seq": 7, "ts": now, "smoke": True, **forged}
    controller.publish_raw("facilities/garage/g-cq4/telemetry", json.dumps(body))
    # and, with the same password, reports under other ids (the broker drops them)
    for topic in ("facilities/garage/g-hc3/telemetry", "facilities/charging/cs-20/telemetry"):
        controller.publish_raw(topic, json.dumps({"seq": 8, "ts": now, "smoke": True}))

    expected = {"cs-01", "cs-02", "g-cq4/north", "g-cq4/south"}
    db = api.service.settings.db
    rows = "SELECT device || coalesce('/' || gate, ''), requested_by, cause FROM commands"
    await wait_for(lambda: len(query(db, rows)) >= len(expected), what="the commands audited")
    await wait_for(lambda: heard.commanded() >= expected, what="the commands delivered")
    cause = f"garage_telemetry g-cq4 seq 7 ts {now:.3f}"
    assert sorted(query(db, rows)) == sorted((target, "rules", cause) for target in expected)
    assert heard.commanded() == expected

    # staff hear of it at once: a critical alert, on MQTT and in the API, with its commands
    # (nobody acks them here: command_failed alerts follow, about the same targets)
    await wait_for(lambda: bool(heard.alerts()), what="the alert on MQTT")
    smoke = [a for a in heard.alerts() if a["rule"] == "smoke"]
    assert [(a["subject"], a["severity"], a["state"]) for a in smoke] == [
        ("g-cq4", "critical", "active")
    ]
    assert {a["subject"].split("/")[0] for a in heard.alerts()} <= {"g-cq4", "cs-01", "cs-02"}
    alerts = (await api.http.get("/api/alerts", headers=bearer(staff))).json()["items"]
    (alert,) = [a for a in alerts if a["rule"] == "smoke"]
    assert alert["subject"] == "g-cq4"
    assert {a["cause"] for a in alert["actions"]} == {cause}
    audit = (await api.http.get("/api/audit", headers=bearer(staff))).json()["items"]
    commands = [e for e in audit if e["kind"] == "command"]
    assert {(e["target"], e["cause"]) for e in commands} == {(t, cause) for t in expected}


async def test_a_station_cannot_name_another_station_in_its_report(
    api: Api, device: DeviceFactory
) -> None:
    heard = Heard(device)
    station = device("cs-05", client_id="cs-05")
    now = time.time()
    body = {
        "seq": 3,
        "ts": now,
        "smoke": True,
        "station": "cs-04",
        "garage": "g-cq8",
        "ports": [{"port": 1, "state": "charging", "power_w": 9000.0, "station": "cs-04"}],
    }
    station.publish_raw("facilities/charging/cs-05/telemetry", json.dumps(body))
    db = api.service.settings.db
    await wait_for(lambda: bool(heard.commanded()), what="a command delivered")
    stored = "SELECT rule FROM alerts WHERE subject = 'cs-05' AND rule = 'smoke'"
    await wait_for(lambda: bool(query(db, stored)), what="the smoke alert stored")
    await wait_for(lambda: bool(query(db, "SELECT 1 FROM commands")), what="commands audited")
    assert heard.commanded() == {"cs-05"}
    assert {row[0] for row in query(db, "SELECT device FROM commands")} == {"cs-05"}
    causes = {row[0] for row in query(db, "SELECT cause FROM commands")}
    assert causes == {f"station_telemetry cs-05 seq 3 ts {now:.3f}"}


async def test_a_device_cannot_publish_commands_alerts_or_the_service_status(
    device: DeviceFactory,
) -> None:
    """Straight to the broker, without the service: a device's password writes nothing that
    other devices, wall displays or the service act on (the broker drops it silently)."""
    seen: list[str] = []
    device("observer").subscribe("facilities/#", lambda topic, _payload: seen.append(topic))
    controller = device("g-hc3", client_id="g-hc3")
    barrier = "facilities/garage/g-hc3/telemetry"

    async def pass_barrier(seq: int) -> None:
        """Publish what the device may publish; once the observer has it, the broker has
        delivered everything before it (and the retained messages of earlier tests)."""
        body = json.dumps({"seq": seq, "ts": time.time()})
        controller.publish_raw(barrier, body).wait_for_publish(5)
        await wait_for(lambda: barrier in seen, what="the barrier message")
        seen.clear()

    await pass_barrier(1)
    command = {"id": "forged", "ts": time.time(), "action": "power_off", "expires": 4e9}
    alert = {"rule": "smoke", "subject": "g-cq4", "severity": "critical", "state": "active"}
    forged = [
        ("facilities/charging/cs-07/command", command),  # a station inside its own garage
        ("facilities/charging/cs-20/command", command),
        ("facilities/garage/g-cq4/gate/north/command", {**command, "action": "open"}),
        ("facilities/garage/g-hc3/gate/north/command", {**command, "action": "open"}),
        ("facilities/alerts/smoke/g-cq4", alert),
        ("facilities/service/status", "offline"),
    ]
    for topic, body in forged:
        payload = body if isinstance(body, str) else json.dumps(body)
        controller.publish_raw(topic, payload, retain=True).wait_for_publish(5)
    controller.publish_raw(barrier, json.dumps({"seq": 2, "ts": time.time()})).wait_for_publish(5)
    await wait_for(lambda: barrier in seen, what="the barrier message")
    assert seen == [barrier]
