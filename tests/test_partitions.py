"""`facilities run --partition K/N`: two instances on one site and one database, each owning
its garages (with their stations) and lone stations (docs/scaling.md, "Several instances")."""

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from facilities.broker_config import service_acl, write_broker_config
from facilities.cli import main
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerLink, BrokerUrl
from facilities.mqtt.topics import Topics
from facilities.partition import Partition, unit_of
from facilities.site import Site
from simulators.client import DeviceClient
from tests.support.db import query
from tests.support.devices import Devices
from tests.support.payloads import port, reading, telemetry
from tests.support.poll import wait_for
from tests.support.processes import ServiceProcess, run_cli, start_broker

# The example district split in two (CRC-32 of each unit's key, pinned here: a change of the
# hash would move every device to another instance at an upgrade).
OWNER_OF = {
    "g-cq4": 0,
    "cs-01": 0,
    "cs-02": 0,
    "cs-03": 0,
    "g-cq8": 1,
    "cs-04": 1,
    "cs-05": 1,
    "g-hc3": 1,
    "cs-07": 1,
    "cs-08": 1,
    "cs-06": 1,
    "cs-16": 0,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0/2", Partition(0, 2)), ("1/2", Partition(1, 2)), ("0/1", Partition(0, 1)), ("", None)],
)
def test_a_partition_is_k_of_n(text: str, expected: Partition | None) -> None:
    assert Partition.parse(text) == expected


def test_a_garage_and_its_stations_are_one_unit_hashed_stably(site: Site) -> None:
    halves = Partition(0, 2), Partition(1, 2)
    for device, owner in OWNER_OF.items():
        assert [p.owns(site, device) for p in halves] == [owner == 0, owner == 1], device
    assert unit_of(site, "cs-01") == "g-cq4"
    assert unit_of(site, "cs-03") == "cs-03"
    for garage in site.garages.values():
        for station in garage.stations:
            assert halves[0].owns(site, station) == halves[0].owns(site, garage.id)
    mine, others = halves[0].owned(site), halves[0].owned(site, mine=False)
    assert set(mine.stations) | set(others.stations) == set(site.stations)
    assert not set(mine.stations) & set(others.stations)


@pytest.mark.parametrize("value", ["2/2", "0/0", "x", "1", "a/2", "0/2/3", "1/1"])
def test_a_bad_partition_exits_2_with_one_line(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--partition", value]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"facilities: --partition {value!r}: ")


def test_a_bad_partition_in_the_environment_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FACILITIES_PARTITION", "3/2")
    assert main(["run"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "facilities: --partition '3/2': K must be from 0 to N-1 and N at least 1"
    ]


def test_broker_config_makes_a_service_user_for_each_partition(tmp_path: Path, site: Site) -> None:
    done = write_broker_config(site, tmp_path / "broker", partitions=2)
    users = ("facilities.0-of-2", "facilities.1-of-2")
    assert set(users) <= set(done.made)
    acl = (tmp_path / "broker" / "acl").read_text()
    for user in users:
        block = acl.split(f"user {user}\n")[1].split("\n\n")[0]
        assert block.splitlines() == list(service_acl(Topics()))


# what a resident sees of a station at once on any instance
SHOWN = ("id", "community", "garage", "online", "ports_total", "ports_free", "power_w", "fault")


def _metric(port: int, name: str) -> float:
    """The sum of a metric's samples on an instance's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


@pytest.fixture
def pair(
    tmp_path: Path, site: Site, store_target: str
) -> Iterator[tuple[PrivateBroker, list[ServiceProcess]]]:
    """A private broker and two instances, 0/2 and 1/2, on one database, each its own
    broker user (the shipped mosquitto.conf makes the user the session)."""
    broker = start_broker(tmp_path / "broker", site)
    db = store_target
    instances = [
        ServiceProcess(
            broker,
            db,
            client_id=f"facilities-part-{k}",
            log=tmp_path / f"service-{k}.log",
            extra=("--partition", f"{k}/2"),
        )
        for k in (0, 1)
    ]
    try:
        for instance in instances:
            instance.start()
        yield broker, instances
    finally:
        for instance in instances:
            if instance.process is not None and instance.process.poll() is None:
                instance.kill()
        broker.stop()


async def _server_sent(response: httpx.Response, into: list[tuple[str, dict[str, object]]]) -> None:
    """The events of a live stream (`/api/events`), as (kind, data), until cancelled."""
    kind = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind:
            into.append((kind, json.loads(line.removeprefix("data: "))))


def _person(printed: str) -> str:
    """The id `facilities staff add` / `residents add` printed (`# staff s-1a2b3c4d (Wang)…`)."""
    found = re.search(r"^# \w+ (\S+) ", printed, re.MULTILINE)
    assert found is not None, printed
    return found[1]


def _charging(n: int, **fields: object) -> dict[str, object]:
    return reading(
        n, **{"voltage_v": 230.0, "power_w": 300.0, "energy_wh": 20.0, "temp_c": 30.0, **fields}
    )


@pytest.mark.slow
async def test_two_partitions_store_once_cut_once_and_show_every_station(
    pair: tuple[PrivateBroker, list[ServiceProcess]], site: Site
) -> None:
    broker, instances = pair
    db = instances[0].db
    devices = Devices(broker)
    try:
        # each instance says it is up on its own status topic
        statuses: dict[str, bytes] = {}
        observer = devices.client("observer")
        observer.subscribe("facilities/service/+/+/status", lambda t, p: statuses.__setitem__(t, p))
        await wait_for(
            lambda: (
                statuses
                == {
                    "facilities/service/partition/0-of-2/status": b"online",
                    "facilities/service/partition/1-of-2/status": b"online",
                }
            ),
            what="both partitions online",
        )
        stations = {sid: devices.station(sid) for sid in site.stations}
        # every station: 20 messages, 300 W on port 1, the other nine idle
        ports = [_charging(1), *(port(n) for n in range(2, 11))]
        for seq in range(1, 21):
            for station in stations.values():
                station.publish_raw(telemetry(seq, ports))
        total = 20 * len(stations)
        await wait_for(
            lambda: query(db, "SELECT count(*) FROM station_samples") == [(total,)],
            what="every message stored",
            timeout_s=30,
        )
        # each message was received by one instance only: none stored twice, none a duplicate
        ingested = [_metric(i.port, "facilities_messages_ingested_total") for i in instances]
        assert sum(ingested) == total
        assert all(n > 0 for n in ingested)
        assert sum(_metric(i.port, "facilities_messages_duplicate_total") for i in instances) == 0
        assert query(
            db,
            "SELECT count(*) FROM (SELECT DISTINCT station, seq FROM station_samples) AS messages",
        ) == [(total,)]

        # an overheated port of cs-05 (partition 1): one power_off, sent by its owner; the
        # live stream of instance 0, which does not own it, hears of the alert and the port
        heard: list[tuple[str, dict[str, object]]] = []
        async with (
            httpx.AsyncClient(timeout=10) as http,
            http.stream("GET", f"http://127.0.0.1:{instances[0].port}/api/events") as stream,
        ):
            listening = asyncio.create_task(_server_sent(stream, heard))
            try:
                stations["cs-05"].publish_raw(telemetry(21, [_charging(3, temp_c=65.0)]))
                await wait_for(
                    lambda: (
                        query(
                            db, "SELECT action, port, outcome FROM commands WHERE device = 'cs-05'"
                        )
                        == [("power_off", 3, "acked")]
                    ),
                    what="cs-05/3 cut and acked",
                )
                await wait_for(
                    lambda: any(
                        kind == "alert"
                        and data["subject"] == "cs-05/3"
                        and data["rule"] == "port_over_temperature"
                        for kind, data in heard
                    ),
                    what="the alert on instance 0's stream",
                )
                await wait_for(
                    lambda: any(
                        kind == "station" and data["id"] == "cs-05" for kind, data in heard
                    ),
                    what="cs-05 on instance 0's stream",
                )
            finally:
                listening.cancel()
        # smoke in g-cq4 (partition 0): both stations inside cut by their owner
        garage = devices.client("g-cq4", client_id="g-cq4")
        garage.publish_raw(
            "facilities/garage/g-cq4/telemetry",
            json.dumps({"seq": 1, "ts": time.time(), "smoke": True, "occupancy": 80}),
        )
        for sid in ("cs-01", "cs-02"):
            await wait_for(
                lambda s=sid: any(c.port is None for c in stations[s].commands),
                what=f"{sid} powered off",
            )
        await wait_for(
            lambda: (
                {row[0] for row in query(db, "SELECT device FROM commands")}
                == {"cs-05", "cs-01", "cs-02", "g-cq4"}
            ),
            what="the commands stored",
        )
        assert [len(stations[s].commands) for s in ("cs-05", "cs-03")] == [1, 0]
        assert query(db, "SELECT rule, subject FROM alerts ORDER BY subject") == [
            ("port_over_temperature", "cs-05/3"),
            ("smoke", "g-cq4"),
        ]

        # either instance answers for every station, as its owner sees it (figures such as
        # last_seen may be a copy behind: docs/scaling.md)
        def views(port: int) -> dict[str, dict[str, object]]:
            body = httpx.get(f"http://127.0.0.1:{port}/api/stations", timeout=5).json()
            return {s["id"]: {k: s[k] for k in SHOWN} for s in body}

        await wait_for(
            lambda: views(instances[0].port) == views(instances[1].port),
            what="the same stations from both instances",
        )
        shown = views(instances[0].port)
        assert set(shown) == set(site.stations)
        assert all(s["online"] for s in shown.values())
        assert shown["cs-06"]["ports_free"] == 9  # owned by 1, shown by 0
        assert shown["cs-03"]["ports_free"] == 9  # owned by 0

        # either instance takes a request for any device: a command goes from the device's
        # owner (which alone hears its ack), asked by the other when the request came there
        added = run_cli("staff", "add", "--db", str(db), "--name", "Wang")
        token, staff = added.stdout.strip().splitlines()[-1], _person(added.stdout)

        # the staff list of cut-offs is the district's from either instance, each port with
        # what its owner's guards say of switching it on
        def cut_offs(port: int) -> list[tuple[object, ...]]:
            body = httpx.get(
                f"http://127.0.0.1:{port}/api/cutoffs",
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            ).json()
            return [
                (
                    c["since"],
                    c["device"],
                    c["port"],
                    c["rule"],
                    tuple((b["reason"], b["rule"]) for b in c["switch_on_blocked"]),
                )
                for c in body["items"]
                if c["kind"] == "port_off"
            ]

        # the same list, in the same order (oldest first), from either instance
        await wait_for(
            lambda: cut_offs(instances[0].port) == cut_offs(instances[1].port),
            what="the same cut-offs from both instances",
        )
        listed = cut_offs(instances[0].port)
        assert listed == sorted(listed, key=lambda row: str(row[0]))
        listed = [row[1:] for row in listed]
        assert (
            "cs-05",
            3,
            "port_over_temperature",
            (("unacknowledged", "port_over_temperature"),),
        ) in listed
        assert {row[0] for row in listed} == {"cs-05", "cs-01", "cs-02"}
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
            for n, instance in enumerate(instances, 1):
                url = f"http://127.0.0.1:{instance.port}/api/stations/cs-06/ports/{n}/power"
                answer = await http.post(url, json={"on": False}, timeout=15)
                assert answer.status_code == 200, answer.text
                assert answer.json()["status"] == "done"
        assert sorted((c.action.value, c.port) for c in stations["cs-06"].commands) == [
            ("power_off", 1),
            ("power_off", 2),
        ]
        # audited once each, by the owner, with the asker's client address
        assert sorted(query(db, "SELECT target, person, status, outcome FROM api_requests")) == [
            ("cs-06/1", staff, 200, "acked"),
            ("cs-06/2", staff, 200, "acked"),
        ]
        # a refusal is the owner's, passed on as it was given: switching on a port the rules
        # hold off until the alert is acknowledged (cs-05/3 is partition 1's)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
            url = f"http://127.0.0.1:{instances[0].port}/api/stations/cs-05/ports/3/power"
            refused = await http.post(url, json={"on": True}, timeout=15)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "conflict"
        assert "acknowledge port_over_temperature (cs-05/3)" in refused.json()["detail"]
        # an alert is acknowledged by the instance that holds it, asked by either
        [(alert_id,)] = query(db, "SELECT id FROM alerts WHERE subject = 'cs-05/3'")
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
            url = f"http://127.0.0.1:{instances[0].port}/api/alerts/{alert_id}/ack"
            acked = await http.post(url, timeout=15)
        assert acked.status_code == 200, acked.text
        assert acked.json()["acknowledged_by"] == staff
        await wait_for(
            lambda: (
                query(db, "SELECT acknowledged_by FROM alerts WHERE id = ?", alert_id) == [(staff,)]
            ),
            what="the acknowledgement stored",
        )
        # a resident of a garage partition 1 owns opens its gate through instance 0
        resident = run_cli("residents", "add", "--db", str(db), "--name", "Li", "--garage", "g-cq8")
        key = {"Idempotency-Key": "tap-1"}
        gate = devices.garage("g-cq8")
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {resident.stdout.strip().splitlines()[-1]}"}
        ) as http:
            url = f"http://127.0.0.1:{instances[0].port}/api/garages/g-cq8/gates/main/open"
            opened = [await http.post(url, headers=key, timeout=15) for _ in range(2)]
        assert [o.status_code for o in opened] == [200, 200], opened[0].text
        assert opened[1].headers.get("Idempotent-Replayed") == "true"
        assert [c.action.value for c in gate.commands] == ["open"]
    finally:
        devices.close()
    for instance in instances:
        code, _ = instance.terminate()
        assert code == 0, instance.log.read_text()[-2000:]


async def test_a_partition_of_thousands_of_devices_subscribes_in_packets_the_broker_takes(
    broker: PrivateBroker, device
) -> None:
    """12,000 topic filters are ~400 KB: over the shipped broker's 256 KB max_packet_size
    in one SUBSCRIBE (the broker would drop the connection at every attempt)."""
    topics = Topics()
    stations = [f"cs-{n:05d}" for n in range(12_000)]
    heard: list[str] = []
    link = BrokerLink(
        BrokerUrl.parse(broker.service_url(f"facilities-many-{uuid.uuid4().hex[:6]}")),
        client_id=f"many-{uuid.uuid4().hex[:6]}",
        topics=topics,
        on_message=lambda topic, _payload, _delivery: heard.append(topic),
        subscriptions=topics.device_subscriptions(stations, []),
    )
    await link.connect(timeout_s=5)
    try:
        await wait_for(lambda: link.subscribed, what="every SUBACK")
        rogue = device("rogue")
        rogue.publish_raw(topics.station(stations[-1], "telemetry"), b"{}").wait_for_publish(5)
        await wait_for(lambda: heard == [topics.station(stations[-1], "telemetry")], what="it")
        assert link.connected
    finally:
        await link.close()


@pytest.mark.slow
async def test_the_devices_of_a_dead_partition_are_shown_offline_until_it_is_back(
    pair: tuple[PrivateBroker, list[ServiceProcess]], site: Site
) -> None:
    broker, instances = pair
    devices = Devices(broker)

    def online(port: int) -> dict[str, bool]:
        body = httpx.get(f"http://127.0.0.1:{port}/api/stations", timeout=5).json()
        return {s["id"]: s["online"] for s in body if s["id"] in ("cs-03", "cs-06")}

    try:
        for sid in ("cs-03", "cs-06"):
            devices.station(sid).publish_raw(telemetry(1, [_charging(1)]))
        await wait_for(
            lambda: online(instances[0].port) == {"cs-03": True, "cs-06": True},
            what="both online",
        )
        instances[1].kill()  # owns cs-06: its Will says its partition is offline
        await wait_for(
            lambda: online(instances[0].port) == {"cs-03": True, "cs-06": False},
            what="cs-06 shown offline",
        )
        # nobody to carry out a request for cs-06: refused at once, not after a wait
        added = run_cli("staff", "add", "--db", str(instances[0].db), "--name", "Wang")
        token = added.stdout.strip().splitlines()[-1]
        started = time.monotonic()
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
            refused = await http.post(
                f"http://127.0.0.1:{instances[0].port}/api/stations/cs-06/ports/1/power",
                json={"on": False},
                timeout=15,
            )
        assert refused.status_code == 503, refused.text
        assert "partition 1/2, which is not running" in refused.json()["detail"]
        assert time.monotonic() - started < 2
        # audited by the instance that refused it (no owner heard of it)
        await wait_for(
            lambda: (
                query(instances[0].db, "SELECT target, status, outcome FROM api_requests")
                == [("cs-06/1", 503, "unavailable")]
            ),
            what="the refusal audited",
        )
        instances[1].start()  # its copies come again
        await wait_for(
            lambda: online(instances[0].port) == {"cs-03": True, "cs-06": True},
            what="cs-06 shown online again",
        )
    finally:
        devices.close()


def _ask(qid: str, reply_to: str, not_after: float) -> str:
    """An ask as one instance sends it to another (docs/scaling.md, "Requests for another
    instance's devices"): a resident of g-cq8 opening its main gate."""
    person = {"id": "r-test", "role": "resident", "name": "Li", "garages": ["g-cq8"]}
    asked = {"kind": "gate_open", "person": person, "device": "g-cq8", "gate": "main"}
    return json.dumps({"id": qid, "reply_to": reply_to, "asked": asked, "not_after": not_after})


@pytest.mark.slow
async def test_an_ask_sent_twice_opens_once_and_one_past_its_time_opens_nothing(
    pair: tuple[PrivateBroker, list[ServiceProcess]],
) -> None:
    """A copy of an ask the broker delivers again is not carried out again, and an ask that
    reaches the owner after its time (the asker has answered the person by then) is refused:
    a gate never opens twice, or late."""
    broker, instances = pair
    devices = Devices(broker)
    try:
        gate = devices.garage("g-cq8")  # partition 1's
        peer = DeviceClient(
            BrokerUrl.parse(broker.service_url("facilities-peer")), client_id="facilities-peer"
        ).connect()
        devices.clients.append(peer)
        reply_to = f"facilities/service/answer/{uuid.uuid4().hex[:16]}"
        answers: list[dict[str, object]] = []
        peer.subscribe(reply_to, lambda _t, p: answers.append(json.loads(p)))
        await wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{instances[1].port}/healthz").status_code == 200,
            what="partition 1 up",
        )
        ask = "facilities/service/partition/1-of-2/ask"
        twice = _ask("a" * 16, reply_to, time.time() + 5)
        for _ in range(2):
            peer.publish_raw(ask, twice).wait_for_publish(5)
        peer.publish_raw(ask, _ask("b" * 16, reply_to, time.time() - 1)).wait_for_publish(5)
        await wait_for(lambda: len(answers) >= 2, what="two answers")
        by_id = {str(a["id"]): a for a in answers}
        assert set(by_id) == {"a" * 16, "b" * 16}
        assert by_id["a" * 16]["done"] is not None
        late = by_id["b" * 16]["refused"]
        assert isinstance(late, dict) and late["error"] == "unavailable"
        assert "too late" in str(late["detail"])
        # a barrier: one more ask, taken after the copy; once it is answered, a second
        # carry-out of the copy (begun before it) would have sent its open
        peer.publish_raw(ask, _ask("c" * 16, reply_to, time.time() + 5)).wait_for_publish(5)
        await wait_for(lambda: len(answers) >= 3, what="the third answer")
        assert [str(a["id"]) for a in answers[2:]] == ["c" * 16]
        done = [a["done"] for a in answers if a["done"] is not None]
        opened = [str(d["command_id"]) for d in done if isinstance(d, dict)]
        assert [c.id for c in gate.commands] == opened  # the first ask's open and the third's
        assert len(opened) == 2
    finally:
        devices.close()


@pytest.mark.slow
async def test_a_request_for_a_partition_never_started_is_refused_at_once(
    tmp_path: Path, site: Site, store_target: str
) -> None:
    broker = start_broker(tmp_path / "broker", site)
    only = ServiceProcess(
        broker,
        store_target,
        client_id="facilities-part-0",
        log=tmp_path / "service.log",
        extra=("--partition", "0/2"),
    )
    try:
        only.start()
        added = run_cli("staff", "add", "--db", store_target, "--name", "Wang")
        started = time.monotonic()
        async with httpx.AsyncClient() as http:
            refused = await http.post(
                f"http://127.0.0.1:{only.port}/api/stations/cs-06/ports/1/power",
                json={"on": False},
                headers={"Authorization": f"Bearer {added.stdout.strip().splitlines()[-1]}"},
                timeout=15,
            )
        assert refused.status_code == 503, refused.text
        assert "partition 1/2, which is not running" in refused.json()["detail"]
        assert time.monotonic() - started < 2
    finally:
        only.kill()
        broker.stop()
