"""Devices for the random safety test: firmware whose sensors the test sets, and a ledger of
every message they published."""

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum

from paho.mqtt.client import MQTTMessageInfo

from facilities.mqtt.session import BrokerUrl
from facilities.mqtt.topics import Topics
from simulators.client import DeviceClient
from tests.support.payloads import ack, message, reading, telemetry

# A small district, with ids the session broker knows (site.example.toml): one garage with a
# station inside (garage smoke cuts it and opens the gate) and one station outside. Commands time out after 0.5 s with 2 tries so that a silent
# device costs a second, not fifteen; alerts clear 1 s after their condition (docs/site.md).
SITE_TOML = """
[rules]
clear_after_s = 1
command_timeout_s = 0.5
command_tries = 2

[[community]]
id = "cq4"
name = "长桥四村"
name_en = "Changqiao No.4 Village"

[[garage]]
id = "g-cq4"
community = "cq4"
capacity = 20
gates = ["north"]

[[station]]
id = "cs-01"
community = "cq4"
garage = "g-cq4"
ports = 4

[[station]]
id = "cs-03"
community = "cq4"
ports = 4
"""
STATIONS = ("cs-01", "cs-03")
PORTS = 4
GARAGE, GATE = "g-cq4", "north"
STATION_GARAGE = {"cs-01": GARAGE}
UNKNOWN_STATION = "cs-02"  # a station of the broker's district that this site does not have
NORMAL_TEMP_C = 30.0
TOPICS = Topics()


class Behaviour(StrEnum):
    OBEY = "obey"  # carry out and ack at once
    LATE = "late"  # carry out and ack after a delay (within or past the service's retries)
    NEVER = "never"  # never answer (a hung relay board)
    REFUSE = "refuse"  # answer ok=false (a stuck relay)


@dataclass(frozen=True, slots=True)
class Sent:
    """One publish: `key` is the stored identity of a valid message (table, key columns), or
    None for a message that must be quarantined; `maybe_key` for one that may be either."""

    payload: bytes
    qos: int
    key: tuple[object, ...] | None
    either: bool = False  # stored under `key` or quarantined: both keep the promise


@dataclass
class Ledger:
    """Every message the devices published, in order (appended from several threads)."""

    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, item: Sent) -> None:
        with self.lock:
            self.sent.append(item)

    def snapshot(self) -> list[Sent]:
        with self.lock:
            return list(self.sent)


@dataclass
class Port:
    relay_on: bool = True
    plugged: bool = False
    temp_c: float = NORMAL_TEMP_C
    overload: bool = False  # the charger draws 1,200 W while the relay is on
    energy_wh: float = 0.0

    def state(self) -> str:
        if not self.relay_on:
            return "disabled"
        return "charging" if self.plugged else "idle"

    def power_w(self) -> float:
        if not (self.relay_on and self.plugged):
            return 0.0
        return 1200.0 if self.overload else 250.0


class Station:
    """A charging station's firmware: sensors set by the test, relays switched by commands."""

    def __init__(self, station: str, broker_url: str, ledger: Ledger) -> None:
        self.id = station
        self.ledger = ledger
        self.ports = {n: Port() for n in range(1, PORTS + 1)}
        self.cabinet_temp_c = 25.0
        self.leakage_ma = 2.0
        self.smoke = False
        self.faults: dict[int, str] = {}
        self.behaviour = Behaviour.OBEY
        self.late_s = 0.0
        self.lock = threading.RLock()  # commands arrive on paho's thread
        self.seq = {"telemetry": 0, "event": 0}
        self.last_ts = 0.0
        # recent valid QoS 1 messages (topic suffix, payload, key), for duplicates
        self.last_valid: list[tuple[str, bytes, tuple[object, ...]]] = []
        self.commands: list[dict[str, object]] = []
        self.timers: list[threading.Timer] = []
        self.client = DeviceClient(
            BrokerUrl.parse(broker_url), client_id=f"{station}-{uuid.uuid4().hex[:6]}"
        ).connect()
        self.client.subscribe(TOPICS.station(station, "command"), self._on_command)

    # -- what the device publishes -------------------------------------------------------------

    def _next(self, topic: str) -> int:
        seq = self.seq[topic]
        self.seq[topic] = seq + 1
        return seq

    def now(self) -> float:
        """The device's clock: never twice the same, never before the last sample."""
        self.last_ts = max(time.time(), self.last_ts + 0.001)
        return self.last_ts

    def body(self, ts: float, **overrides: object) -> dict[str, object]:
        ports = []
        for n, p in self.ports.items():
            if p.plugged and p.relay_on:
                p.energy_wh += 0.5
            port_temp = overrides.get(f"temp_{n}", p.temp_c)
            ports.append(
                reading(
                    n,
                    p.state(),
                    voltage_v=228.0,
                    power_w=p.power_w(),
                    energy_wh=p.energy_wh,
                    temp_c=port_temp,
                )
            )
        return telemetry(
            self._next("telemetry"),
            ports,
            ts=ts,
            temp_c=self.cabinet_temp_c,
            leakage_ma=self.leakage_ma,
            smoke=self.smoke,
        )

    def telemetry(self, *, qos: int = 1, ts: float | None = None, **overrides: object) -> bytes:
        """Publish the sensors as they read now (or at `ts`, a late sample)."""
        with self.lock:
            body = self.body(self.now() if ts is None else ts, **overrides)
            return self.send_valid("telemetry", body, ("station_samples", self.id), qos=qos)

    def event(self, kind: str, port: int | None, code: str | None = None) -> bytes:
        with self.lock:
            body: dict[str, object] = {"seq": self._next("event"), "ts": self.now(), "type": kind}
            if port is not None:
                body["port"] = port
            if code is not None:
                body["code"] = code
            return self.send_valid("event", body, ("charging_events", self.id))

    def send_valid(
        self, suffix: str, body: dict[str, object], table: tuple[str, str], *, qos: int = 1
    ) -> bytes:
        payload = json.dumps(body).encode()
        key = (*table, body["ts"], body["seq"])
        self.publish(suffix, payload, key=key, qos=qos)
        if qos == 1:
            self.last_valid = [*self.last_valid[-4:], (suffix, payload, key)]
        return payload

    def publish(
        self,
        suffix: str,
        payload: bytes,
        *,
        key: tuple[object, ...] | None,
        qos: int = 1,
        either: bool = False,
        retain: bool = False,
        wait: bool = True,
    ) -> MQTTMessageInfo:
        """Publish and record; from the test's thread, wait for the broker's PUBACK."""
        self.ledger.add(Sent(payload, qos, key, either))
        info = self.client.publish_raw(
            TOPICS.station(self.id, suffix), payload, qos=qos, retain=retain
        )
        if wait and threading.current_thread() is threading.main_thread():
            info.wait_for_publish(5)
        return info

    def burst(self, count: int) -> None:
        """`count` messages back to back, good and bad in turn, each PUBACK awaited only at
        the end: a SIGKILL right after lands amid commits and acks (redeliveries)."""
        infos = []
        with self.lock:
            for i in range(count):
                if i % 2:
                    body = {"seq": "bad", "ts": self.now(), "nonce": uuid.uuid4().hex}
                    infos.append(
                        self.publish("telemetry", json.dumps(body).encode(), key=None, wait=False)
                    )
                else:
                    payload = json.dumps(self.body(self.now())).encode()
                    key = (
                        "station_samples",
                        self.id,
                        json.loads(payload)["ts"],
                        json.loads(payload)["seq"],
                    )
                    infos.append(self.publish("telemetry", payload, key=key, wait=False))
        for info in infos:
            info.wait_for_publish(5)

    def reordered(self, port: int) -> None:
        """Two samples published newest first: on the device's clock the socket cools by
        11 °C; in the order they arrive it warms by 11 °C (a false temperature_rise)."""
        with self.lock:
            before = self.ports[port].temp_c
            older = self.body(self.now())
            self.ports[port].temp_c = max(before - 11.0, -20.0)
            newer = self.body(self.now())
            for body in (newer, older):
                self.send_valid("telemetry", body, ("station_samples", self.id))

    def late_burst(self, port: int) -> None:
        """Nine samples a device buffered, a minute apart, the last a minute before its newest
        reading (all within `clock_skew_s`, 600 s, of the server's clock: docs/rules.md judges
        them on the device's clock), the socket warming 1.5 °C a minute, delivered at once:
        no rise of 10 °C within a minute on the device's clock."""
        with self.lock:
            start = self.now() - 540.0
            now_temp = self.ports[port].temp_c
            for i in range(9):
                temp = now_temp - 13.5 + 1.5 * i
                body = self.body(start + 60.0 * i, **{f"temp_{port}": temp})
                self.send_valid("telemetry", body, ("station_samples", self.id))

    def reboot(self) -> None:
        """Power cycled: relays back on, `seq` from 0 again (docs/protocol.md), the sensors
        as they were (a hot socket is still hot); it reports at once."""
        with self.lock:
            for port in self.ports.values():
                port.relay_on = True
            self.seq = {"telemetry": 0, "event": 0}
            self.telemetry()

    def invalid(self, variant: str) -> None:
        """A message that must be quarantined, unique (a nonce), QoS 1."""
        nonce = uuid.uuid4().hex
        ts = self.now()
        payloads = {
            "malformed": f'{{"seq": 1, "ts": {ts}, "nonce": "{nonce}"'.encode(),
            "schema": json.dumps({"seq": "12", "ts": ts, "ports": [], "nonce": nonce}).encode(),
            "nan": f'{{"seq": 1, "ts": {ts}, "temp_c": NaN, "nonce": "{nonce}"}}'.encode(),
            # issue 10, point 2: an integer SQLite cannot hold, a port the station lacks
            "huge_seq": json.dumps({"seq": 2**63, "ts": ts, "ports": []}).encode(),
            "big_port": json.dumps(
                {"seq": 1, "ts": ts, "ports": [{"port": 99, "state": "idle"}], "nonce": nonce}
            ).encode(),
        }
        with self.lock:
            self.publish("telemetry", payloads[variant], key=None)

    def duplicate(self, count: int) -> None:
        """Publish again the last `count` valid messages, byte for byte (a device that did
        not get its PUBACK before it lost the link)."""
        with self.lock:
            again = self.last_valid[-count:]
            for suffix, payload, key in again:
                self.publish(suffix, payload, key=key)

    # -- what the device does with commands ----------------------------------------------------

    def _on_command(self, _topic: str, raw: bytes) -> None:
        command = json.loads(raw)
        with self.lock:
            self.commands.append(command)
            behaviour, delay = self.behaviour, self.late_s
        if behaviour is Behaviour.NEVER:
            return
        if behaviour is Behaviour.REFUSE:
            self._ack(command, ok=False)
            return
        if behaviour is Behaviour.OBEY:
            self._carry_out(command)
            return
        timer = threading.Timer(delay, self._carry_out, args=(command,))
        with self.lock:
            self.timers.append(timer)
        timer.start()

    def _carry_out(self, command: dict[str, object]) -> None:
        with self.lock:
            port = command.get("port")
            on = command.get("action") == "power_on"
            targets = [self.ports[port]] if isinstance(port, int) else list(self.ports.values())
            for p in targets:
                p.relay_on = on
            self._ack(command, ok=True)
            self.telemetry()  # report the new relay state at once (docs/protocol.md)

    def _ack(self, command: dict[str, object], *, ok: bool) -> None:
        error = {} if ok else {"error": "relay stuck (random test)"}
        answer = ack(str(command["id"]), ok=ok, **error)
        self.client.publish_raw(TOPICS.station(self.id, "command/ack"), json.dumps(answer))

    def busy(self) -> bool:
        """Whether a late answer is still to come."""
        with self.lock:
            return any(t.is_alive() for t in self.timers)

    def close(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.client.close()


class Garage:
    """The garage controller: telemetry with its smoke detector; opens its gate on command."""

    def __init__(self, broker_url: str, ledger: Ledger) -> None:
        self.ledger = ledger
        self.smoke = False
        self.seq = 0
        self.last_ts = 0.0
        self.lock = threading.Lock()
        self.client = DeviceClient(
            BrokerUrl.parse(broker_url), client_id=f"{GARAGE}-{uuid.uuid4().hex[:6]}"
        ).connect()
        self.client.subscribe(TOPICS.gate(GARAGE, GATE, "command"), self._on_command)

    def telemetry(self) -> None:
        with self.lock:
            self.last_ts = max(time.time(), self.last_ts + 0.001)
            body = message(self.seq, ts=self.last_ts, occupancy=5, smoke=self.smoke)
            self.seq += 1
        payload = json.dumps(body).encode()
        self.ledger.add(Sent(payload, 1, ("garage_samples", GARAGE, body["ts"], body["seq"])))
        self.client.publish_raw(TOPICS.garage(GARAGE, "telemetry"), payload).wait_for_publish(5)

    def _on_command(self, _topic: str, raw: bytes) -> None:
        answer = json.dumps(ack(json.loads(raw)["id"]))
        self.client.publish_raw(TOPICS.gate(GARAGE, GATE, "command/ack"), answer)

    def close(self) -> None:
        self.client.close()
