"""A broker per community, bridged to the centre (docs/bridge.md): two real Mosquittos, the
devices on the community's (the edge), the service on the central one, the link between them
cut and restored under load, and the central broker restarted."""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from facilities.broker_config import acl_text, bridge_user, render_bridge_conf, users_of
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl
from facilities.mqtt.topics import Topics
from facilities.service import Service, run
from facilities.settings import Settings
from facilities.site import Site, load_site
from facilities.wiring import build
from simulators.charging import PortModel, StationModel
from simulators.client import DeviceClient
from simulators.devices import SimulatedStation
from tests.support.db import query
from tests.support.devices import Devices
from tests.support.paths import EXAMPLE_SITE
from tests.support.payloads import event, port, telemetry
from tests.support.poll import wait_for
from tests.support.processes import TEST_USERS, run_cli, start_broker
from tests.support.proxy import Proxy

BRIDGED = "cq4"  # its devices: cs-01, cs-02, cs-03 and the garage g-cq4 (site.example.toml)
LOADED = ("cs-01", "cs-02")
GARAGE, GATE = "g-cq4", "north"
# Rounds of messages per phase (one telemetry from each loaded station and one gate event a
# round, every 10 ms: ~200 messages/s, some 50 times the example district's rate).
ROUNDS = 150
ROUND_S = 0.01
# Mosquitto retries a lost bridge after `restart_timeout` (1 s, then backing off to 10 s:
# mosquitto-bridge.conf); the service after up to 30 s (BACKOFF_CAP_S); the backlog is small.
SETTLE_S = 60.0
TOPICS = Topics()


def _bridged_site(tmp_path: Path) -> tuple[Path, Site]:
    """The example district with cq4 on a broker of its own."""
    text = EXAMPLE_SITE.read_text("utf-8")
    marked = text.replace('id = "cq4"\n', 'id = "cq4"\nbridged = true\n', 1)
    assert marked != text
    path = tmp_path / "site.toml"
    path.write_text(marked, "utf-8")
    return path, load_site(path)


@dataclass
class Link:
    site_path: Path
    site: Site
    centre: PrivateBroker
    edge: PrivateBroker
    proxy: Proxy  # the network between the community and the centre


@pytest.fixture
def link(tmp_path: Path) -> Iterator[Link]:
    """The central broker, the community's broker bridged to it through a proxy the test can
    cut, each from the shipped config."""
    site_path, site = _bridged_site(tmp_path)
    centre = start_broker(tmp_path / "centre", site)
    proxy = Proxy(centre.port).start()
    bridge = render_bridge_conf(
        community=BRIDGED,
        centre=f"127.0.0.1:{proxy.port}",
        password=centre.credentials[bridge_user(BRIDGED)],
    )
    edge = PrivateBroker(
        tmp_path / "edge", site, community=BRIDGED, bridge=bridge, extra_users=dict(TEST_USERS)
    )
    try:
        edge.start()
        yield Link(site_path, site, centre, edge, proxy)
    finally:
        edge.stop()
        proxy.close()
        centre.stop()


@pytest.fixture
async def central(link: Link, store_target: str) -> AsyncIterator[Service]:
    """The service, on the central broker only."""
    settings = Settings(
        site=link.site_path,
        broker=link.centre.service_url(f"facilities-test-{uuid.uuid4().hex[:8]}"),
        db=store_target,
        connect_timeout_s=5.0,
    )
    running = build(settings, link.site)
    async with run(running):
        await wait_for(lambda: running.link.subscribed, what="subscription")
        yield running


class Heard:
    """What an observer on one broker hears on one topic: the bridge's notifications (`1` up,
    `0` down), a device's availability."""

    def __init__(self, broker: PrivateBroker, topic: str) -> None:
        self.seen: list[bytes] = []
        self.devices = Devices(broker)
        observer = self.devices.client("observer")
        observer.subscribe(topic, lambda _t, payload: self.seen.append(payload))

    async def last(self, payload: bytes) -> None:
        await wait_for(lambda: self.seen[-1:] == [payload], timeout_s=SETTLE_S, what=f"{payload!r}")

    def close(self) -> None:
        self.devices.close()


@pytest.fixture
def bridge_state(link: Link) -> Iterator[Heard]:
    """The bridge's state as the central broker tells it."""
    state = Heard(link.centre, TOPICS.bridge_state(BRIDGED))
    yield state
    state.close()


def test_the_centre_has_a_bridge_user_for_the_community_not_its_devices(tmp_path: Path) -> None:
    _, site = _bridged_site(tmp_path)
    centre = users_of(site)
    assert bridge_user(BRIDGED) in centre
    assert not {"cs-01", "cs-02", "cs-03", GARAGE} & set(centre)
    assert {"cs-04", "g-cq8"} <= set(centre)  # the other communities' devices stay
    assert users_of(site, community=BRIDGED) == ("cs-01", "cs-02", "cs-03", GARAGE)
    block = acl_text(site, TOPICS).split(f"user {bridge_user(BRIDGED)}\n")[1].split("\n\n")[0]
    lines = block.splitlines()
    assert "topic write facilities/charging/cs-01/telemetry" in lines
    assert "topic write facilities/garage/g-cq4/gate/+/event" in lines
    assert "topic read facilities/charging/cs-03/command" in lines
    assert "topic read facilities/service/status" in lines
    assert "topic write facilities/bridge/cq4/state" in lines
    assert not [line for line in lines if "cs-04" in line or "#" in line]


def test_broker_config_writes_a_community_broker_s_users(tmp_path: Path) -> None:
    site_path, _ = _bridged_site(tmp_path)
    out = tmp_path / "edge"
    done = run_cli(
        *("broker-config", "--site", str(site_path), "--community", BRIDGED),
        *("--out", str(out), "--broker-group", ""),
    )
    assert done.returncode == 0, done.stderr
    users = [line.split(":")[0] for line in (out / "passwd").read_text().splitlines()]
    assert users == ["cs-01", "cs-02", "cs-03", GARAGE]
    unknown = run_cli(
        *("broker-config", "--site", str(site_path), "--community", "nowhere"),
        *("--out", str(tmp_path / "nowhere"), "--broker-group", ""),
    )
    assert unknown.returncode == 2
    assert "--community nowhere: not a community of the site" in unknown.stderr


@pytest.mark.slow  # some 13 s: seven phases of load, and two reconnections of the bridge
async def test_nothing_is_lost_or_doubled_across_a_cut_link_and_a_centre_restart(
    link: Link, central: Service, bridge_state: Heard
) -> None:
    devices = Devices(link.edge)
    try:
        stations = {s: devices.client(s) for s in LOADED}
        garage = devices.client(GARAGE)
        await bridge_state.last(b"1")
        seq = 0

        async def load(rounds: int) -> None:
            nonlocal seq
            for _ in range(rounds):
                for station, client in stations.items():
                    body = telemetry(seq, [port(1), port(2)], temp_c=25.0)
                    client.publish_raw(TOPICS.station(station, "telemetry"), _json(body))
                gate_event = event(seq, "entry", credential=f"card:{seq:08x}")
                garage.publish_raw(TOPICS.gate(GARAGE, GATE, "event"), _json(gate_event))
                seq += 1
                await asyncio.sleep(ROUND_S)

        await load(ROUNDS)
        link.proxy.cut()  # the community's uplink goes down; its devices go on publishing
        await bridge_state.last(b"0")  # the bridge's Last Will, published by the centre
        await load(ROUNDS)
        link.proxy.restore()
        await load(ROUNDS)  # under load while the bridge reconnects and drains its queue
        await bridge_state.last(b"1")
        await load(ROUNDS)
        link.centre.stop()  # a clean stop: Mosquitto saves its sessions and queues
        await load(ROUNDS)
        link.centre.start()
        await load(ROUNDS)
        # the bridge's third connection through the link: the first, after the cut, now
        await wait_for(lambda: link.proxy.connections == 3, timeout_s=SETTLE_S, what="bridge")
        await bridge_state.last(b"1")
        await load(ROUNDS)

        started = time.monotonic()
        db = central.settings.db
        expected = {(device, n) for device in (*LOADED, GARAGE) for n in range(seq)}
        await wait_for(
            lambda: _stored(db) == expected, timeout_s=SETTLE_S, what="every message stored"
        )
        drained_s = time.monotonic() - started
        twice = query(
            db,
            "SELECT station, seq FROM station_samples WHERE station IN (?, ?)"
            " GROUP BY station, seq HAVING COUNT(*) > 1"
            " UNION ALL SELECT garage, seq FROM gate_events WHERE garage = ?"
            " GROUP BY garage, gate, seq HAVING COUNT(*) > 1",
            *LOADED,
            GARAGE,
        )
        assert twice == []  # stored once each, though QoS 1 may deliver some twice
        duplicates = central.metrics.registry.get_sample_value(
            "facilities_messages_duplicate_total"
        )
        print(
            f"\n{3 * seq} messages sent at the edge, each stored once; the last stored "
            f"{drained_s:.1f} s after the last was sent; redelivered copies dropped by the "
            f"service: {duplicates:.0f}; bridge connections through the link: "
            f"{link.proxy.connections}"
        )
    finally:
        devices.close()


async def test_a_command_reaches_a_device_on_the_edge_and_its_ack_comes_back(
    link: Link, central: Service, bridge_state: Heard
) -> None:
    devices = Devices(link.edge)
    try:
        station = _station(devices, "cs-03")
        await bridge_state.last(b"1")
        # The service's `online`, whether said before the bridge subscribed or after, is
        # retained at the edge for devices that connect later.
        status = Heard(link.edge, TOPICS.service_status())
        try:
            await wait_for(lambda: status.seen == [b"online"], what="retained status at the edge")
        finally:
            status.close()
        station.publish_raw(telemetry(1, [port(1, "charging")], temp_c=62.0))
        await wait_for(
            lambda: [c.action.value for c in station.commands] == ["power_off"],
            timeout_s=SETTLE_S,
            what="power_off at the station on the edge",
        )
        await wait_for(
            lambda: (
                query(central.settings.db, "SELECT device, action, outcome FROM commands")
                == [("cs-03", "power_off", "acked")]
            ),
            timeout_s=SETTLE_S,
            what="its ack at the service",
        )
    finally:
        devices.close()


async def test_a_device_lost_while_the_link_is_down_is_offline_once_it_is_back(
    link: Link, central: Service, bridge_state: Heard
) -> None:
    devices = Devices(link.edge)
    availability = TOPICS.station("cs-03", "availability")
    at_edge = Heard(link.edge, TOPICS.bridge_state(BRIDGED))
    will_at_edge = Heard(link.edge, availability)
    try:
        station = _station(devices, "cs-03")
        await bridge_state.last(b"1")
        await at_edge.last(b"1")
        db = central.settings.db
        await wait_for(lambda: _status(db, "cs-03") == "online", what="online at the centre")
        link.proxy.cut()
        await bridge_state.last(b"0")
        await at_edge.last(b"0")  # the community's broker knows its link is down too
        station.client._client.loop_stop()  # power lost: no DISCONNECT, and no reconnection
        station.client._client._sock.close()
        await will_at_edge.last(b"offline")  # the edge published the station's Will...
        assert _status(db, "cs-03") == "online"  # ...which the centre cannot hear yet
        link.proxy.restore()
        await wait_for(
            lambda: _status(db, "cs-03") == "offline", timeout_s=SETTLE_S, what="the Will"
        )
        retained = Heard(link.centre, availability)  # connects now: hears what is retained
        try:
            await wait_for(lambda: retained.seen == [b"offline"], what="retained at the centre")
        finally:
            retained.close()
    finally:
        at_edge.close()
        will_at_edge.close()
        devices.close()


def _station(devices: Devices, station_id: str) -> SimulatedStation:
    """A simulated station on the edge with its availability and Last Will."""
    url = devices.broker.url(station_id)
    client = DeviceClient(
        BrokerUrl.parse(url),
        client_id=station_id,
        availability_topic=TOPICS.station(station_id, "availability"),
    ).connect()
    devices.clients.append(client)
    model = StationModel(station_id, [PortModel(n) for n in range(1, 11)])
    return SimulatedStation(client, model, TOPICS)


def _stored(db: Path) -> set[tuple[object, ...]]:
    """(device, seq) of every loaded station's telemetry and the garage's gate events."""
    return set(
        query(
            db,
            "SELECT station, seq FROM station_samples WHERE station IN (?, ?)"
            " UNION ALL SELECT garage, seq FROM gate_events WHERE garage = ? AND gate = ?",
            *LOADED,
            GARAGE,
            GATE,
        )
    )


def _status(db: Path, device: str) -> str | None:
    rows = query(
        db, "SELECT status FROM availability_changes WHERE device = ? ORDER BY id DESC", device
    )
    return str(rows[0][0]) if rows else None


def _json(body: dict[str, object]) -> str:
    return json.dumps(body)
