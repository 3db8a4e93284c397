"""A device learns what the service refused of its own, on its own `…/rejected` topic, and
nobody else does (docs/protocol.md, "Telling a device what was refused"): the real service,
the real broker with the generated ACL, devices with their own credentials."""

import json
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl
from facilities.service import Service, run
from facilities.settings import Settings
from facilities.site import Site
from facilities.wiring import build
from simulators.client import DeviceClient
from tests.support.clock import MovableClock
from tests.support.db import query
from tests.support.devices import DeviceFactory
from tests.support.payloads import port, telemetry
from tests.support.poll import wait_for
from tests.support.processes import ServiceProcess, run_cli

REJECTED = "facilities/charging/{}/rejected"
TELEMETRY = "facilities/charging/{}/telemetry"


class Heard:
    """What one subscription received, in order, as (topic, decoded JSON or raw text)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    def __call__(self, topic: str, payload: bytes) -> None:
        try:
            body: object = json.loads(payload)
        except ValueError:
            body = payload.decode("utf-8", "replace")
        with self._lock:
            self.messages.append((topic, body))

    def bodies(self) -> list[object]:
        with self._lock:
            return [body for _, body in self.messages]


def _published(service: Service) -> float:
    value = service.metrics.registry.get_sample_value("facilities_rejections_published_total")
    return value or 0.0


async def test_a_station_hears_its_refusal_with_the_reason_after_it_is_stored(
    service: Service, device: DeviceFactory
) -> None:
    db = service.settings.db
    stored_when_told: list[int] = []

    def told(topic: str, payload: bytes) -> None:
        # on the device's side, at the moment it hears: the quarantine row is already there
        rows = query(db, "SELECT count(*) FROM quarantine WHERE device = 'cs-05'")
        stored_when_told.append(int(str(rows[0][0])))
        heard(topic, payload)

    heard = Heard()
    station = device("cs-05")
    station.subscribe(REJECTED.format("cs-05"), told)
    bad = telemetry(12, [port(1, power_w=-5.0)], ts=1764400300.0)
    station.publish_raw(TELEMETRY.format("cs-05"), json.dumps(bad)).wait_for_publish(5)
    station.publish_raw(TELEMETRY.format("cs-05"), b'{"seq": 13, "ts": ').wait_for_publish(5)
    await wait_for(lambda: len(heard.bodies()) == 2, what="two refusals told")

    schema, malformed = heard.bodies()
    assert isinstance(schema, dict)
    assert isinstance(malformed, dict)
    assert schema.pop("detail").startswith("ports.0.power_w: ")
    assert schema == {
        "topic": TELEMETRY.format("cs-05"),
        "seq": 12,
        "ts": 1764400300.0,
        "reason": "schema_mismatch",
    }
    # seq and ts only when they could be read
    assert malformed.pop("detail")
    assert malformed == {"topic": TELEMETRY.format("cs-05"), "reason": "malformed_json"}
    # the n-th refusal told was stored before (with those of its batch)
    assert [n >= i for i, n in enumerate(stored_when_told, 1)] == [True, True]
    assert _published(service) == 2


async def test_a_garage_controller_hears_its_gates_refusals_on_the_garage_s_topic(
    service: Service, device: DeviceFactory
) -> None:
    heard = Heard()
    garage = device("g-hc3")
    garage.subscribe("facilities/garage/g-hc3/rejected", heard)
    topic = "facilities/garage/g-hc3/gate/north/event"
    event = {"seq": 4, "ts": 1764400300.5, "type": "teleported"}
    garage.publish_raw(topic, json.dumps(event)).wait_for_publish(5)
    await wait_for(lambda: len(heard.bodies()) == 1, what="the gate's refusal told")
    [(told_on, body)] = heard.messages
    assert told_on == "facilities/garage/g-hc3/rejected"
    assert isinstance(body, dict)
    assert (body["topic"], body["seq"], body["ts"], body["reason"]) == (
        topic,
        4,
        1764400300.5,
        "schema_mismatch",
    )
    assert "type" in body["detail"]


async def test_a_device_reads_its_own_refusals_and_the_service_status_and_no_other_s(
    service: Service, device: DeviceFactory
) -> None:
    """The generated ACL: cs-06 may subscribe to another station's refusals, but the broker
    delivers it none of them (Mosquitto answers the SUBACK and drops what it may not read)."""
    status = Heard()
    others = Heard()
    own = Heard()
    cs05 = device("cs-05")
    cs05.subscribe(REJECTED.format("cs-05"), Heard())
    cs06 = device("cs-06")
    cs06.subscribe("facilities/service/status", status)
    cs06.subscribe(REJECTED.format("cs-05"), others)
    cs06.subscribe(REJECTED.format("+"), own)
    await wait_for(lambda: status.bodies() == ["online"], what="the service's status")

    cs05.publish_raw(TELEMETRY.format("cs-05"), b"not json").wait_for_publish(5)
    await wait_for(lambda: _published(service) == 1, what="cs-05's refusal published")
    # A barrier: cs-06's own refusal is published after cs-05's, on the same connection of
    # the service; once it has arrived, cs-05's would have before it.
    cs06.publish_raw(TELEMETRY.format("cs-06"), b"[]").wait_for_publish(5)
    await wait_for(lambda: len(own.messages) == 1, what="cs-06's own refusal")
    assert [topic for topic, _ in own.messages] == [REJECTED.format("cs-06")]
    assert others.messages == []


async def test_refusals_of_topics_that_name_no_device_go_nowhere(
    service: Service, device: DeviceFactory, broker: PrivateBroker
) -> None:
    """An unknown device or topic has no `…/rejected` topic to be told on: quarantined and
    counted (under `_unknown`), published nowhere. The refusals the service publishes, heard
    back on its own subscription, are not taken for device input."""
    seen = Heard()
    device("observer").subscribe("facilities/#", seen)
    rogue_user = broker.new_user_like("rogue")
    rogue = DeviceClient(BrokerUrl.parse(broker.url(rogue_user)), client_id=rogue_user).connect()
    try:
        for n in range(5):  # ids the site file does not have
            unknown = TELEMETRY.format(f"cs-9{n}")
            rogue.publish_raw(unknown, json.dumps(telemetry(n))).wait_for_publish(5)
        rogue.publish_raw("facilities/charging/cs-05/diagnostics", b"{}").wait_for_publish(5)
    finally:
        rogue.close()
    await wait_for(lambda: service.ingest.quarantined == 6, what="all quarantined")
    cs05 = device("cs-05")
    cs05.publish_raw(TELEMETRY.format("cs-05"), b"{}").wait_for_publish(5)  # the barrier
    await wait_for(
        lambda: any(topic.endswith("/rejected") for topic, _ in seen.messages),
        what="cs-05's refusal seen",
    )
    told = [(topic, body) for topic, body in seen.messages if topic.endswith("/rejected")]
    assert [topic for topic, _ in told] == [REJECTED.format("cs-05")]
    # the service's own refusal heard back: acknowledged, neither stored nor quarantined
    await wait_for(lambda: service.ingest.committed >= 8, what="the refusal heard back")
    db = service.settings.db
    rows = query(db, "SELECT device, reason, count(*) FROM quarantine GROUP BY 1, 2 ORDER BY 1, 2")
    assert rows == [
        ("", "unknown_device", 5),
        ("", "unknown_topic", 1),
        ("cs-05", "schema_mismatch", 1),
    ]
    # one series for every id the site file does not name, however many a client invents
    series = {
        (sample.labels["device"], sample.labels["reason"]): sample.value
        for metric in service.metrics.registry.collect()
        if metric.name == "facilities_messages_rejected"
        for sample in metric.samples
        if sample.name.endswith("_total")
    }
    assert series == {
        ("_unknown", "unknown_device"): 5,
        ("_unknown", "unknown_topic"): 1,
        ("cs-05", "schema_mismatch"): 1,
    }
    assert _published(service) == 1


QUOTA = 5


@pytest.fixture
async def quota_service(
    settings: Settings, site: Site, clock: MovableClock
) -> AsyncIterator[Service]:
    """The service with a quarantine quota of 5 bad messages per device and hour."""
    small = settings.model_copy(update={"quarantine_per_device_hour": QUOTA})
    running = build(small, site, clock=clock, monotonic=clock.monotonic)
    async with run(running):
        await wait_for(lambda: running.link.subscribed, what="subscription")
        yield running


async def test_a_flood_of_bad_messages_is_told_up_to_the_quota_and_counted_past_it(
    quota_service: Service, device: DeviceFactory, clock: MovableClock
) -> None:
    service = quota_service
    heard = Heard()
    station = device("cs-07")
    station.subscribe(REJECTED.format("cs-07"), heard)
    flood = 200
    infos = [
        station.publish_raw(TELEMETRY.format("cs-07"), f'{{"seq": {n}, "ts": "late"}}')
        for n in range(flood)
    ]
    for info in infos:
        info.wait_for_publish(10)
    await wait_for(lambda: service.ingest.quarantined == flood, what="the flood in")
    # An hour later the quota starts again: this refusal is published after the flood's, on
    # the same topic, so once it is heard every refusal of the flood told has been too.
    clock.advance(3600)
    station.publish_raw(TELEMETRY.format("cs-07"), '{"seq": 1000, "ts": "late"}')
    await wait_for(
        lambda: any(isinstance(b, dict) and b["seq"] == 1000 for b in heard.bodies()),
        what="the next hour's refusal",
    )
    seqs = [b["seq"] for b in heard.bodies() if isinstance(b, dict)]
    assert seqs == [0, 1, 2, 3, 4, 1000]
    registry = service.metrics.registry
    labels = {"reason": "schema_mismatch", "device": "cs-07"}
    over = registry.get_sample_value("facilities_quarantine_over_quota_total", labels)
    assert over == flood - QUOTA
    assert registry.get_sample_value("facilities_messages_rejected_total", labels) == flood + 1
    assert _published(service) == QUOTA + 1


def _metric(service: ServiceProcess, sample: str) -> float:
    """One sample of the process's /metrics, e.g. `name{label="value"}`; 0 when absent."""
    text = httpx.get(f"http://127.0.0.1:{service.port}/metrics", timeout=2).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.slow
async def test_facilities_run_tells_a_station_up_to_its_quota_and_staff_list_the_rest(
    tmp_path: Path, broker: PrivateBroker, device: DeviceFactory, store_target: str
) -> None:
    """The whole path through `facilities run`: a station that floods bad telemetry hears
    its quota's worth of refusals, and staff find every kept one over HTTP."""
    db = store_target
    added = run_cli("staff", "add", "--db", str(db), "--name", "物业 陈经理")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    service = ServiceProcess(
        broker,
        db,
        client_id=f"told-{uuid.uuid4().hex[:6]}",
        log=tmp_path / "svc.log",
        extra=("--quarantine-per-device-hour", "3"),
    )
    heard = Heard()
    station = device("cs-12")
    station.subscribe(REJECTED.format("cs-12"), heard)
    service.start()
    try:
        for n in range(10):
            payload = f'{{"seq": {n}, "ts": 1764400300.0, "ports": "none"}}'
            station.publish_raw(TELEMETRY.format("cs-12"), payload).wait_for_publish(5)
        rejected = 'facilities_messages_rejected_total{device="cs-12",reason="schema_mismatch"}'
        await wait_for(lambda: _metric(service, rejected) == 10, what="10 refused")
        # every refusal published is counted as it is handed to the link: 3, not 10
        assert _metric(service, "facilities_rejections_published_total") == 3
        await wait_for(lambda: len(heard.messages) == 3, what="3 refusals heard")
        assert [b["seq"] for b in heard.bodies() if isinstance(b, dict)] == [0, 1, 2]
        over = 'facilities_quarantine_over_quota_total{device="cs-12",reason="schema_mismatch"}'
        assert _metric(service, over) == 7
        async with httpx.AsyncClient(timeout=5) as http:
            listed = await http.get(
                f"http://127.0.0.1:{service.port}/api/quarantine?device=cs-12",
                headers={"Authorization": f"Bearer {token}"},
            )
        assert listed.status_code == 200, listed.text
        assert [item["payload"][:10] for item in listed.json()["items"]] == [
            '{"seq": 2,',
            '{"seq": 1,',
            '{"seq": 0,',
        ]
        code, _ = service.terminate()
        assert code == 0
    finally:
        if service.process and service.process.poll() is None:
            service.kill()
