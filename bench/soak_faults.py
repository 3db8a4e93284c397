"""The soak's faults: what each one injects and expects, and when in the run it comes."""

import json
import signal
import time
from collections.abc import Callable

from bench.rig import start_service
from bench.soak_report import Rig
from facilities.mqtt.topics import Topics
from facilities.rule_ids import RuleId
from simulators.devices import Behaviour
from simulators.fleet import Fleet
from tests.support.poll import wait_until

SERVICE_DOWN_S = 3.0  # the service stays dead this long after its SIGKILL: a backlog builds
BROKER_DOWN_S = 2.0
GARAGE_SMOKE_S = 120.0  # seconds of smoke in the garage: the alert must hold, then clear


def _station_fault(station: str, **attrs: object) -> Callable[[Rig], None]:
    def inject(rig: Rig) -> None:
        device = rig.fleet.stations[station]
        with device.lock:
            for name, value in attrs.items():
                setattr(device.model, name, value)

    return inject


def overheat(station: str, port: int) -> tuple[str, Callable[[Rig], None]]:
    def inject(rig: Rig) -> None:
        _station_fault(station, overheat_port=port)(rig)
        # 72 degrees at once: over the absolute limit and a rise of more than 10 in 60 s
        rig.expected.alert(RuleId.PORT_OVER_TEMPERATURE, f"{station}/{port}")
        rig.expected.alert(RuleId.TEMPERATURE_RISE, f"{station}/{port}")

    return f"over-temperature at {station}/{port}", inject


def overload(station: str, port: int, *, acks: bool = True) -> tuple[str, Callable[[Rig], None]]:
    def inject(rig: Rig) -> None:
        if not acks:
            rig.fleet.stations[station].behaviour = Behaviour.IGNORE
            rig.expected.silent.add(station)
            rig.expected.alert(RuleId.COMMAND_FAILED, f"{station}/{port}")
        _station_fault(station, overload_port=port)(rig)
        rig.expected.alert(RuleId.PORT_OVERLOAD, f"{station}/{port}")

    what = "overload" if acks else "overload at a station that never acks"
    return f"{what} at {station}/{port}", inject


def leakage(station: str) -> tuple[str, Callable[[Rig], None]]:
    def inject(rig: Rig) -> None:
        _station_fault(station, leaking=True)(rig)
        rig.expected.alert(RuleId.LEAKAGE, station)

    return f"leakage at {station}", inject


def smoke(station: str) -> tuple[str, Callable[[Rig], None]]:
    def inject(rig: Rig) -> None:
        _station_fault(station, smoking=True)(rig)
        rig.expected.alert(RuleId.SMOKE, station)

    return f"smoke at {station}", inject


def garage_smoke(garage: str) -> tuple[str, Callable[[Rig], None]]:
    def inject(rig: Rig) -> None:
        model = rig.fleet.world.garages[garage]
        model.smoke_left_s = GARAGE_SMOKE_S
        rig.expected.alert(RuleId.SMOKE, garage)
        # gates opened for the evacuation may stay open past the held-open limit
        rig.expected.allowed |= {(RuleId.GATE_HELD_OPEN, f"{garage}/{g}") for g in model.gates}

    return f"smoke in garage {garage} for {GARAGE_SMOKE_S:.0f} s", inject


def _bad_messages(batch: int, *, hostile: bool) -> list[tuple[str, bytes]]:
    """(topic, payload) of input a broken or hostile device sends, each to be quarantined;
    `batch` makes every payload unique (a copy would be a redelivery, stored once)."""
    good = {"seq": batch, "ts": time.time(), "ports": [{"port": 1, "state": "idle"}]}
    topics = Topics()
    cs = topics.station("cs-02", "telemetry")
    messages = [
        (cs, f"{{not json {batch}".encode()),
        (cs, json.dumps({**good, "temp_c": "hot"}).encode()),
        (cs, f'{{"seq": {batch}, "ts": 1.0, "temp_c": NaN}}'.encode()),
        (topics.station("cs-99", "telemetry"), json.dumps(good).encode()),
        (topics.station("cs-02", "whatever"), json.dumps(good).encode()),
        # over the protocol's 64 KiB cap
        (topics.garage("g-cq4", "telemetry"), b"x" * 70_000 + str(batch).encode()),
    ]
    if hostile:  # numbers the store cannot hold, a port the station does not have
        messages += [
            (cs, json.dumps({**good, "seq": 2**63 + batch}).encode()),
            (cs, json.dumps({**good, "ports": [{"port": 25_000 + batch}]}).encode()),
        ]
    return messages


def invalid(batch: int) -> tuple[str, Callable[[Rig], None]]:
    def inject(rig: Rig) -> None:
        for topic, payload in _bad_messages(batch, hostile=rig.hostile):
            rig.bad.publish_raw(topic, payload).wait_for_publish(10)
            rig.expected.quarantined += 1

    return f"invalid messages (batch {batch})", inject


def kill_service(rig: Rig) -> None:
    rig.service.send_signal(signal.SIGKILL)
    rig.service.wait(10)
    time.sleep(SERVICE_DOWN_S)
    restarted = start_service(rig.workdir, rig.site_path, rig.broker)
    rig.service, rig.http_port = restarted.process, restarted.port
    rig.rss.follow(rig.service.pid)


def restart_broker(rig: Rig) -> None:
    # Mosquitto publishes every connected device's Last Will as it shuts down: the service
    # hears each device go offline once, and back online when it reconnects
    for device in rig.fleet.clients:
        rig.expected.alert(RuleId.OFFLINE, device)
    rig.broker.stop()
    time.sleep(BROKER_DOWN_S)
    rig.broker.start()
    reconnected(rig.fleet)


def reconnected(fleet: Fleet, timeout_s: float = 60.0) -> None:
    """Wait for every simulated device to be back (each subscribes again on its own)."""
    wait_until(
        lambda: all(client.connected() for client in fleet.clients.values()),
        timeout_s=timeout_s,
        what="every simulated device to reconnect to the broker",
        interval_s=0.1,
    )


def schedule() -> list[tuple[float, str, Callable[[Rig], None]]]:
    """(share of the run, what, inject): faults spread over the first 60 % of the run, the rest
    steady, so that RSS is read on a service that has seen everything."""
    points: list[tuple[float, tuple[str, Callable[[Rig], None]]]] = [
        (0.08, invalid(1)),
        (0.10, overheat("cs-06", 2)),
        (0.15, overload("cs-09", 4)),
        (0.20, leakage("cs-11")),
        (0.25, ("SIGKILL of the service, restarted", kill_service)),
        (0.30, smoke("cs-12")),
        (0.35, garage_smoke("g-hc4")),
        (0.40, overload("cs-14", 5, acks=False)),
        (0.45, invalid(2)),
        (0.50, ("broker restart", restart_broker)),
        (0.55, overheat("cs-16", 1)),
        (0.60, invalid(3)),
    ]
    return [(share, what, inject) for share, (what, inject) in points]
