"""Building live state the way ingest does: from wire payloads, at given times."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from facilities.alerts import Transition
from facilities.charging.payloads import StationEvent, StationTelemetry
from facilities.charging.state import Session
from facilities.garage.payloads import GarageTelemetry, GateEvent
from facilities.messages import Accepted, MessageKind, Route
from facilities.rules.engine import Engine, Observation
from facilities.wire import Availability
from tests.support.payloads import event, message, reading, telemetry

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Feed:
    """Feeds an engine as ingest would, with the server clock under the test's control."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seq = 0
        self.sessions: list[Session] = []
        self.last: Observation | None = None  # what the last message caused

    def _send(self, route: Route, payload: Any, t: float) -> list[Transition]:
        self.seq += 1
        observation = self.engine.observe(Accepted(route, payload, at(t).timestamp()))
        self.last = observation
        self.sessions += observation.sessions
        return observation.transitions

    def station(
        self, station: str, t: float, *, ports: list[dict[str, Any]] | None = None, **fields: Any
    ) -> list[Transition]:
        ts = at(t).timestamp() + fields.pop("ts_offset", 0.0)  # a device clock that is off
        body = telemetry(self.seq, ports, ts=ts, **fields)
        payload = StationTelemetry.model_validate_json(json.dumps(body))
        return self._send(Route(MessageKind.STATION_TELEMETRY, station), payload, t)

    def port(self, station: str, t: float, port: int = 1, **fields: Any) -> list[Transition]:
        return self.station(station, t, ports=[reading(port, **fields)])

    def event(self, station: str, t: float, **fields: Any) -> list[Transition]:
        payload = StationEvent.model_validate_json(
            json.dumps(message(self.seq, ts=at(t).timestamp(), **fields))
        )
        return self._send(Route(MessageKind.STATION_EVENT, station), payload, t)

    def availability(
        self, device: str, t: float, status: str, *, garage: bool = False
    ) -> list[Transition]:
        kind = MessageKind.GARAGE_AVAILABILITY if garage else MessageKind.STATION_AVAILABILITY
        return self._send(Route(kind, device), Availability(status), t)

    def garage(self, garage: str, t: float, **fields: Any) -> list[Transition]:
        payload = GarageTelemetry.model_validate_json(
            json.dumps(message(self.seq, ts=at(t).timestamp(), **fields))
        )
        return self._send(Route(MessageKind.GARAGE_TELEMETRY, garage), payload, t)

    def gate(self, garage: str, gate: str, t: float, kind: str) -> list[Transition]:
        payload = GateEvent.model_validate_json(
            json.dumps(event(self.seq, kind, ts=at(t).timestamp()))
        )
        return self._send(Route(MessageKind.GATE_EVENT, garage, gate), payload, t)

    def tick(self, t: float) -> list[Transition]:
        return self.engine.tick(at(t))


def raised(transitions: list[Transition], rule: str) -> list[Transition]:
    return [tr for tr in transitions if tr.alert.rule == rule and tr.change.value == "raised"]


def changes(transitions: list[Transition], rule: str) -> list[str]:
    return [f"{tr.change.value}:{tr.alert.subject}" for tr in transitions if tr.alert.rule == rule]
