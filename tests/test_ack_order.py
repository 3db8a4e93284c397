"""docs/protocol.md, "Ack first, then telemetry that says `disabled`", through the real broker
and service: a telemetry that still shows a cut port powered while its `power_off` awaits the
ack sends nothing; one after the ack contradicts the cut and brings `power_off` again, with
a new id."""

import json
import threading
from typing import Any

from facilities.mqtt.topics import Topics
from facilities.service import Service
from tests.support.db import query
from tests.support.devices import DeviceFactory
from tests.support.payloads import reading, telemetry
from tests.support.poll import wait_for

STATION = "cs-01"
HOT_C = 65.0  # over port_temp_max_c (60 °C); the first reading has no temperature, so no rise


class Commands:
    """The distinct commands (by id) the station's command topic delivered, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bodies: dict[str, dict[str, Any]] = {}

    def __call__(self, _topic: str, payload: bytes) -> None:
        body = json.loads(payload)
        with self._lock:
            self.bodies.setdefault(body["id"], body)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self.bodies)


async def test_telemetry_before_the_ack_sends_nothing_and_after_it_cuts_again(
    service: Service, device: DeviceFactory
) -> None:
    topics = Topics()
    station = device(STATION)
    commands = Commands()
    station.subscribe(topics.station(STATION, "command"), commands)
    telemetry_topic = topics.station(STATION, "telemetry")

    def report(seq: int, **fields: Any) -> None:
        body = telemetry(seq, [reading(1, "charging", power_w=300.0, **fields)])
        station.publish_raw(telemetry_topic, json.dumps(body)).wait_for_publish(5)

    def folded(seq: int) -> bool:
        return service.live.read(lambda e: e.stations[STATION].latest_seq) == seq

    report(0)
    report(1, temp_c=HOT_C)
    await wait_for(lambda: len(commands.ids()) == 1, what="the cut")
    first = commands.bodies[commands.ids()[0]]
    assert (first["action"], first["port"]) == ("power_off", 1)

    # measured before the relay opened, published before the ack: expected, nothing is sent
    report(2, temp_c=HOT_C)
    await wait_for(lambda: folded(2), what="the report before the ack folded in")
    ack = {"id": first["id"], "ok": True}
    station.publish_raw(topics.station(STATION, "command/ack"), json.dumps(ack))
    db = service.settings.db
    await wait_for(
        lambda: query(db, "SELECT outcome FROM commands") == [("acked",)], what="the ack"
    )
    assert commands.ids() == [first["id"]]

    # after the ack, a report of the port powered contradicts the cut: power_off again
    report(3, temp_c=HOT_C)
    await wait_for(lambda: len(commands.ids()) == 2, what="the cut again")
    again = commands.bodies[commands.ids()[1]]
    assert (again["action"], again["port"]) == ("power_off", 1)
    assert again["id"] != first["id"]
