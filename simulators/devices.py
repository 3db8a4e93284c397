"""Simulated devices that answer commands as real ones do (or, for tests, ignore or refuse)."""

import json
import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

from pydantic import ValidationError

from facilities.charging.payloads import StationTelemetry
from facilities.garage.payloads import GateEvent, GateEventType
from facilities.mqtt.topics import Topics
from facilities.wire import Command, CommandAck, CommandAction
from simulators.charging import StationModel
from simulators.client import DeviceClient

log = logging.getLogger(__name__)


class Behaviour(StrEnum):
    OBEY = "obey"  # carry the command out and ack ok
    IGNORE = "ignore"  # say nothing (a device that lost power or firmware that hangs)
    REFUSE = "refuse"  # ack ok=false (a relay that is stuck)


class SimulatedStation:
    """A charging station on the broker: publishes telemetry, obeys `power_off`/`power_on`."""

    def __init__(
        self,
        client: DeviceClient,
        model: StationModel,
        topics: Topics,
        *,
        behaviour: Behaviour = Behaviour.OBEY,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.model = model
        self.topics = topics
        self.behaviour = behaviour
        self.lock = threading.Lock()  # commands arrive on paho's thread
        self.commands: list[Command] = []
        self.answered: dict[str, CommandAck] = {}
        self._now = now
        client.subscribe(topics.station(model.station, "command"), self._on_command)

    def now(self) -> float:
        """The device's clock (Unix seconds)."""
        return self._now()

    def publish(self, telemetry: StationTelemetry) -> None:
        self.client.publish(self.topics.station(self.model.station, "telemetry"), telemetry)

    def publish_raw(self, body: dict[str, object]) -> None:
        """Telemetry as raw JSON, as a device's firmware would write it."""
        topic = self.topics.station(self.model.station, "telemetry")
        self.client.publish_raw(topic, json.dumps(body)).wait_for_publish(5)

    def _on_command(self, _topic: str, payload: bytes) -> None:
        ack_topic = self.topics.station(self.model.station, "command/ack")
        command = _take(self, payload, ack_topic, refusal="relay stuck (simulated)")
        if command is None:
            return
        with self.lock:
            if command.action is CommandAction.POWER_OFF:
                self.model.power_off(command.port)
            elif command.action is CommandAction.POWER_ON:
                self.model.power_on(command.port)
            _answer(self, ack_topic, CommandAck(id=command.id, ok=True))
            # report the new state at once rather than at the next 10 s tick
            self.publish(self.model.telemetry(self._now(), _steady))


class SimulatedGarage:
    """A garage controller on the broker: opens its gates on `open` commands."""

    def __init__(
        self,
        client: DeviceClient,
        garage: str,
        gates: tuple[str, ...],
        topics: Topics,
        *,
        behaviour: Behaviour = Behaviour.OBEY,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.garage = garage
        self.topics = topics
        self.behaviour = behaviour
        self.commands: list[Command] = []
        self.answered: dict[str, CommandAck] = {}
        self.seq: dict[str, int] = {}
        self.lock = threading.Lock()
        self._now = now
        for gate in gates:
            client.subscribe(topics.gate(garage, gate, "command"), self._handler(gate))

    def now(self) -> float:
        """The device's clock (Unix seconds)."""
        return self._now()

    def gate_event(self, gate: str, kind: GateEventType, credential: str | None = None) -> None:
        with self.lock:
            seq = self.seq.get(gate, 0)
            self.seq[gate] = seq + 1
        event = GateEvent(seq=seq, ts=self._now(), type=kind, credential=credential)
        self.client.publish(self.topics.gate(self.garage, gate, "event"), event)

    def _handler(self, gate: str) -> Callable[[str, bytes], None]:
        def on_command(_topic: str, payload: bytes) -> None:
            ack_topic = self.topics.gate(self.garage, gate, "command/ack")
            command = _take(self, payload, ack_topic, refusal="jammed (simulated)")
            if command is None:
                return
            _answer(self, ack_topic, CommandAck(id=command.id, ok=True))
            if command.action is CommandAction.OPEN:
                self.gate_event(gate, GateEventType.OPENED)

        return on_command


class _Device(Protocol):
    client: DeviceClient
    behaviour: Behaviour
    commands: list[Command]
    answered: dict[str, CommandAck]

    def now(self) -> float: ...


# Command ids a simulated device remembers, to answer a repeated id without acting twice.
ANSWERS_KEPT = 256


def _take(device: _Device, payload: bytes, ack_topic: str, *, refusal: str) -> Command | None:
    """Read and record a command; answer it for a device told to ignore or refuse. Returns the
    command when the device is to carry it out."""
    try:
        command = Command.model_validate_json(payload)
    except ValidationError:
        log.warning("unreadable command on %s: %r", ack_topic, payload[:100])
        return None
    device.commands.append(command)
    if device.behaviour is Behaviour.IGNORE:
        return None
    if device.behaviour is Behaviour.REFUSE:
        device.client.publish(ack_topic, CommandAck(id=command.id, ok=False, error=refusal))
        return None
    first = device.answered.get(command.id)
    if first is not None:  # a retry of a command already carried out: answer, do not act
        device.client.publish(ack_topic, first)
        return None
    if command.expires is not None and command.expires < device.now():
        # docs/protocol.md: a device never acts on a command past `expires`
        _answer(device, ack_topic, CommandAck(id=command.id, ok=False, error="expired"))
        return None
    return command


def _answer(device: _Device, ack_topic: str, ack: CommandAck) -> None:
    if len(device.answered) >= ANSWERS_KEPT:
        del device.answered[next(iter(device.answered))]
    device.answered[ack.id] = ack
    device.client.publish(ack_topic, ack)


class _Steady:
    """A random source that always answers the middle of the range: telemetry published in
    answer to a command carries no new noise."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


_steady = _Steady()
