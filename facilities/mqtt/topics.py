"""The one place that builds and parses topics (docs/protocol.md, "Topics")."""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from facilities.messages import STATION_KINDS, MessageKind, Route
from facilities.rule_ids import RuleId
from facilities.site import ID_PATTERN

_ID = re.compile(ID_PATTERN)
DEFAULT_PREFIX = "facilities"
# The longest a device topic can be after its prefix: a gate's command ack, with two ids of
# at most 32 characters (ID_PATTERN). Anything longer is no protocol topic, and is refused
# without being kept among the parsed topics (a 64 KB topic name would hold 64 KB there).
_LONGEST_AFTER_PREFIX = len("/garage//gate//command/ack") + 2 * 32


# Topics the service itself publishes: it hears them back (MQTT 3.1.1 has no no-local
# subscription option) and must not take them for device input. A refusal told on a device's
# `…/rejected` topic heard back as `unknown_topic` would be quarantined in turn.
OWN_KINDS = frozenset(
    {
        MessageKind.STATION_COMMAND,
        MessageKind.GATE_COMMAND,
        MessageKind.STATION_REJECTED,
        MessageKind.GARAGE_REJECTED,
    }
)

_STATION_SUFFIX: dict[tuple[str, ...], MessageKind] = {
    ("telemetry",): MessageKind.STATION_TELEMETRY,
    ("event",): MessageKind.STATION_EVENT,
    ("availability",): MessageKind.STATION_AVAILABILITY,
    ("command",): MessageKind.STATION_COMMAND,
    ("command", "ack"): MessageKind.STATION_ACK,
    ("rejected",): MessageKind.STATION_REJECTED,
}
_GARAGE_SUFFIX: dict[tuple[str, ...], MessageKind] = {
    ("telemetry",): MessageKind.GARAGE_TELEMETRY,
    ("availability",): MessageKind.GARAGE_AVAILABILITY,
    ("rejected",): MessageKind.GARAGE_REJECTED,
}
_GATE_SUFFIX: dict[tuple[str, ...], MessageKind] = {
    ("event",): MessageKind.GATE_EVENT,
    ("command",): MessageKind.GATE_COMMAND,
    ("command", "ack"): MessageKind.GATE_ACK,
}

# kind → (family, suffix): what `Topics.of` builds, the inverse of the tables above
_SUFFIXES: dict[MessageKind, tuple[str, tuple[str, ...]]] = {
    **{kind: ("charging", suffix) for suffix, kind in _STATION_SUFFIX.items()},
    **{kind: ("garage", suffix) for suffix, kind in _GARAGE_SUFFIX.items()},
    **{kind: ("gate", suffix) for suffix, kind in _GATE_SUFFIX.items()},
}


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic builder and parser for one prefix; `partition` (`0-of-2`) for an instance that
    owns one partition (docs/scaling.md, "Several instances")."""

    prefix: str = DEFAULT_PREFIX
    partition: str = ""

    def subscriptions(self) -> list[str]:
        """What the service subscribes to: everything devices publish under the prefix."""
        return [f"{self.prefix}/charging/#", f"{self.prefix}/garage/#"]

    def device_subscriptions(self, stations: Iterable[str], garages: Iterable[str]) -> list[str]:
        """What a partition's instance subscribes to: everything these devices publish (a
        garage's gates are under the garage's topic)."""
        return [
            *(f"{self.prefix}/charging/{s}/#" for s in stations),
            *(f"{self.prefix}/garage/{g}/#" for g in garages),
        ]

    def live_copy(self, device: str) -> str:
        """Retained copy of a device's live state, published by the instance that owns it
        for the others (`facilities/service/live/cs-07`)."""
        return f"{self.prefix}/service/live/{device}"

    def live_copies(self) -> str:
        """Every device's live copy."""
        return f"{self.prefix}/service/live/+"

    def partition_statuses(self) -> str:
        """Every partition's instance's status (`service_status` with a partition)."""
        return f"{self.prefix}/service/partition/+/status"

    def status_partition(self, topic: str) -> str | None:
        """The partition (`0-of-2`) of a partition's status topic, None for any other."""
        head, tail = f"{self.prefix}/service/partition/", "/status"
        if not (topic.startswith(head) and topic.endswith(tail)):
            return None
        return topic[len(head) : -len(tail)] or None

    def asks(self, partition: str) -> str:
        """Where the other instances ask a partition's instance (`0-of-2`) to carry out a
        request for one of its devices (`facilities/service/partition/0-of-2/ask`)."""
        return f"{self.prefix}/service/partition/{partition}/ask"

    def answers(self, instance: str) -> str:
        """Where an instance hears the answers to what it asked the others: its own topic,
        by an id it draws at start (`facilities/service/answer/5f0c…`)."""
        return f"{self.prefix}/service/answer/{instance}"

    def live_copy_device(self, topic: str) -> str | None:
        """The device of a live copy's topic, None for any other topic."""
        head = f"{self.prefix}/service/live/"
        if not topic.startswith(head):
            return None
        device = topic[len(head) :]
        return device if _ID.fullmatch(device) else None

    def station(self, station: str, suffix: str) -> str:
        return f"{self.prefix}/charging/{station}/{suffix}"

    def garage(self, garage: str, suffix: str) -> str:
        return f"{self.prefix}/garage/{garage}/{suffix}"

    def gate(self, garage: str, gate: str, suffix: str) -> str:
        return f"{self.prefix}/garage/{garage}/gate/{gate}/{suffix}"

    def of(self, route: Route) -> str:
        """The topic of a device message: the inverse of `parse`."""
        family, suffixes = _SUFFIXES[route.kind]
        suffix = "/".join(suffixes)
        if family == "gate":
            if route.gate is None:
                raise ValueError(f"{route.kind} needs a gate")
            return self.gate(route.device, route.gate, suffix)
        if family == "charging":
            return self.station(route.device, suffix)
        return self.garage(route.device, suffix)

    def rejected(self, route: Route) -> str:
        """Where the device that sent a message on `route` is told that it was refused: its
        own `…/rejected` topic (`facilities/charging/cs-07/rejected`). A garage controller
        publishes for its gates under the garage's id, so a gate's refusals go to the
        garage's topic (docs/protocol.md, "Telling a device what was refused")."""
        if route.kind in STATION_KINDS:
            return self.of(Route(MessageKind.STATION_REJECTED, route.device))
        return self.of(Route(MessageKind.GARAGE_REJECTED, route.device))

    def service_status(self) -> str:
        """Retained `online`/`offline` of the service itself (its Last Will says offline);
        of one partition's instance, its own: `facilities/service/partition/0-of-2/status`."""
        if self.partition:
            return f"{self.prefix}/service/partition/{self.partition}/status"
        return f"{self.prefix}/service/status"

    def bridge_state(self, community: str) -> str:
        """Retained `1`/`0` of a community's broker's bridge to this one: the bridge says `1`
        when it connects, its Last Will `0` when the link is lost (docs/bridge.md)."""
        return f"{self.prefix}/bridge/{community}/state"

    def alert(self, rule: RuleId, subject: str) -> str:
        """Where an alert is published (`facilities/alerts/port_overload/cs-07/3`): retained
        while it is open (docs/rules.md, "On MQTT, for wall displays and Home Assistant")."""
        return f"{self.prefix}/alerts/{rule}/{subject}"

    def all_alerts(self) -> str:
        """Every alert: what a wall display subscribes to."""
        return f"{self.prefix}/alerts/#"

    def all_service(self) -> str:
        """Everything the service says about itself (its status)."""
        return f"{self.prefix}/service/#"

    def everything(self) -> str:
        """Every topic under the prefix (the service reads it all; a test or bench user)."""
        return f"{self.prefix}/#"

    def parse(self, topic: str) -> Route | None:
        """The route of a device topic, or None when the topic is not one of docs/protocol.md's."""
        if len(topic) > len(self.prefix) + _LONGEST_AFTER_PREFIX:
            return None
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
