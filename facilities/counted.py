"""Which messages the live state has counted: the rules' duplicate filter, kept across restarts."""

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from facilities.messages import Accepted, MessageKind
from facilities.store.snapshots import Mark

# Per device topic, the (seq, ts) of this many recent messages: a redelivery after a lost
# link is at most the messages in flight (2,000 for the whole service, mosquitto.conf).
RECENT_KEPT = 2048
# The marks of messages counted this long before a snapshot are saved with it: a counted
# message is committed within seconds (the writer gives up after its 5 s busy timeout, and
# the service stops), so only those can come back, redelivered, after a restart.
MARKS_SAVED_S = 60.0


class Counted:
    """Per device topic, the (seq, ts) of the messages counted recently, and per device the
    receive time of the last one (they come in that order). Not thread-safe: the rules
    runtime calls it under the engine's lock, with the evidence it guards."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        # per device, per topic (kind, gate): (seq, ts) → received_at
        self._recent: dict[
            str, dict[tuple[MessageKind, str | None], OrderedDict[tuple[int, float], float]]
        ] = {}

    def seen_before(self, message: Accepted) -> bool:
        """Whether this (seq, ts) of this device's topic was counted recently (kept with the
        snapshots, so also across a restart); if not, it is counted now. After a lost link
        the broker redelivers every unacknowledged message, up to a batch or two."""
        route = message.route
        self._until[route.device] = message.received_at
        seq = getattr(message.payload, "seq", None)
        ts = getattr(message.payload, "ts", None)
        if seq is None or ts is None:
            return False
        topics = self._recent.setdefault(route.device, {})
        recent = topics.get((route.kind, route.gate))
        if recent is None:
            recent = topics[(route.kind, route.gate)] = OrderedDict()
        if (seq, ts) in recent:
            return True
        if len(recent) >= RECENT_KEPT:
            recent.popitem(last=False)
        recent[(seq, ts)] = message.received_at
        return False

    def until(self, device: str) -> float | None:
        """The receive time of the last message of `device` counted."""
        return self._until.get(device)

    def marks(self, device: str, since: float) -> list[Mark]:
        """The marks of `device` counted since `since` (Unix seconds), newest first."""
        marks = []
        for (kind, gate), recent in self._recent.get(device, {}).items():
            for (seq, ts), received_at in reversed(recent.items()):
                if received_at < since:
                    break
                marks.append((kind.value, gate, seq, ts, received_at))
        return marks

    def restore(
        self, saved: Mapping[str, Iterable[Mark]], until: Mapping[str, float | None]
    ) -> None:
        """The marks saved with the live state (messages it had already counted)."""
        self._until.update((d, t) for d, t in until.items() if t is not None)
        for device, marks in saved.items():
            topics = self._recent.setdefault(device, {})
            for kind, gate, seq, ts, received_at in sorted(marks, key=lambda m: m[4]):
                recent = topics.setdefault((MessageKind(kind), gate), OrderedDict())
                recent[(seq, ts)] = received_at
