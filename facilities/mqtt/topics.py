"""The one place that builds and parses topics (PROTOCOL.md)."""

import re
from dataclasses import dataclass
from functools import lru_cache

from facilities.messages import MessageKind, Route
from facilities.site import ID_PATTERN

_ID = re.compile(ID_PATTERN)
DEFAULT_PREFIX = "facilities"


# Topics the service itself publishes: it hears them back (MQTT 3.1.1 has no no-local
# subscription option) and must not take them for device input.
OWN_KINDS = frozenset({MessageKind.STATION_COMMAND, MessageKind.GATE_COMMAND})

_STATION_SUFFIX: dict[tuple[str, ...], MessageKind] = {
    ("telemetry",): MessageKind.STATION_TELEMETRY,
    ("event",): MessageKind.STATION_EVENT,
    ("availability",): MessageKind.STATION_AVAILABILITY,
    ("command",): MessageKind.STATION_COMMAND,
    ("command", "ack"): MessageKind.STATION_ACK,
}
_GARAGE_SUFFIX: dict[tuple[str, ...], MessageKind] = {
    ("telemetry",): MessageKind.GARAGE_TELEMETRY,
    ("availability",): MessageKind.GARAGE_AVAILABILITY,
}
_GATE_SUFFIX: dict[tuple[str, ...], MessageKind] = {
    ("event",): MessageKind.GATE_EVENT,
    ("command",): MessageKind.GATE_COMMAND,
    ("command", "ack"): MessageKind.GATE_ACK,
}


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic builder and parser for one prefix."""

    prefix: str = DEFAULT_PREFIX

    def subscriptions(self) -> list[str]:
        """What the service subscribes to: everything devices publish under the prefix."""
        return [f"{self.prefix}/charging/#", f"{self.prefix}/garage/#"]

    def station(self, station: str, suffix: str) -> str:
        return f"{self.prefix}/charging/{station}/{suffix}"

    def garage(self, garage: str, suffix: str) -> str:
        return f"{self.prefix}/garage/{garage}/{suffix}"

    def gate(self, garage: str, gate: str, suffix: str) -> str:
        return f"{self.prefix}/garage/{garage}/gate/{gate}/{suffix}"

    def alert(self, rule: str, subject: str) -> str:
        """Where an alert is published (docs/protocol.md): retained while it is open."""
        return f"{self.prefix}/alerts/{rule}/{subject}"

    def service_status(self) -> str:
        """Retained `online`/`offline` of the service itself (its Last Will says offline)."""
        return f"{self.prefix}/service/status"

    def parse(self, topic: str) -> Route | None:
        """The route of a device topic, or None when the topic is not one of PROTOCOL.md's."""
        return _parse(self.prefix, topic)


@lru_cache(maxsize=4096)
def _parse(prefix: str, topic: str) -> Route | None:
    head, sep, rest = topic.partition("/")
    if head != prefix or not sep:
        return None
    parts = tuple(rest.split("/"))
    if len(parts) < 3 or not _ID.match(parts[1]):
        return None
    family, device, tail = parts[0], parts[1], parts[2:]
    if family == "charging":
        kind = _STATION_SUFFIX.get(tail)
        return Route(kind, device) if kind else None
    if family != "garage":
        return None
    kind = _GARAGE_SUFFIX.get(tail)
    if kind:
        return Route(kind, device)
    if len(tail) >= 3 and tail[0] == "gate" and _ID.match(tail[1]):
        kind = _GATE_SUFFIX.get(tail[2:])
        return Route(kind, device, tail[1]) if kind else None
    return None
