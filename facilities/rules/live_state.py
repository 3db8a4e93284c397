"""The live state: the engine behind its lock, fed once per message, read through typed views."""

# Paho's thread feeds it (before the batch commits, so that a safety cut-off never waits for a
# flush); the event loop ticks it and reads it. Nothing else holds the engine or its lock.

import asyncio
import threading
from collections import ChainMap, deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, TypeVar

from facilities import switch_on
from facilities.alerts import Alert, AlertState, Change, Transition
from facilities.charging.state import StationLive
from facilities.counted import MARKS_SAVED_S, Counted
from facilities.cutoffs import Cutoff
from facilities.garage.state import GarageLive
from facilities.messages import Accepted
from facilities.rule_ids import RuleId
from facilities.rules.copies import Copies, LiveCopy, encode
from facilities.rules.engine import Engine, Observation
from facilities.site import Site
from facilities.store.snapshots import LiveRow, Mark, live_state_row
from facilities.verdicts import Action

T = TypeVar("T")


class Reading(NamedTuple):
    """What a view sees of the live state, under the lock, for the length of one call."""

    stations: Mapping[str, StationLive]
    garages: Mapping[str, GarageLive]
    alerts: Mapping[tuple[str, str], Alert]
    desired: Iterable[Cutoff]


@dataclass(frozen=True, slots=True)
class DeviceChanged:
    """A device's visible state changed (told on the event loop)."""

    device: str


@dataclass(frozen=True, slots=True)
class AlertChanged:
    """An alert was raised, escalated, acknowledged or cleared, and is stored; `copied`: an
    alert another instance holds, as its copy told (shown, not counted again here)."""

    transition: Transition
    copied: bool = False


LiveChange = DeviceChanged | AlertChanged


class ChangeStream:
    """The one stream of what changed: subscribers are told on the event loop, in order.
    A subscriber must not block: it runs between the rules' own work."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[LiveChange], None]] = []

    def subscribe(self, subscriber: Callable[[LiveChange], None]) -> None:
        self._subscribers.append(subscriber)

    def publish(self, change: LiveChange) -> None:
        for subscriber in self._subscribers:
            subscriber(change)

    def __bool__(self) -> bool:
        return bool(self._subscribers)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LiveState:
    """The engine, its lock and the duplicate filter; what the engine said, in order, for
    the rules runner to act on; the change stream."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime],
        changes: ChangeStream | None = None,
        copies: Copies | None = None,
    ) -> None:
        self._engine = engine
        # devices another instance owns (`--partition`): shown as their owner copies them
        self._copies = copies
        self._clock = clock
        self.changes = changes if changes is not None else ChangeStream()
        self.site: Site = engine.site
        self._lock = threading.Lock()
        self._counted = Counted()  # which messages the live state holds (under the lock)
        # Whether a command for the action awaits the device's ack (set by the rules'
        # commands; any thread). A report that contradicts a cut-off while it does was sent
        # before the device carried the command out (docs/protocol.md, ack order): it does
        # not assert the cut-off again. Asked here, on paho's thread, in the order of the
        # device's messages, not when the runner gets to it: the ack may be heard meanwhile.
        self.awaits: Callable[[Action], bool] = lambda _action: False
        # What the engine said, in the order it said it (appended under the lock).
        self._said: deque[Observation] = deque()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.start(engine)

    def start(self, engine: Engine) -> None:
        """Hold `engine` (the state saved at the last stop, at start) from now on, and tell
        the event loop of what changes: bound now (inside the event loop, before ingest
        starts), so that messages that arrive before the runner starts still wake it."""
        with self._lock:
            self._engine = engine
            self.site = engine.site
            # Silence before this start is the service's, not the devices': see
            # Engine.reachable.
            engine.listening_since = self._clock()
            self._loop = _running_loop()

    # -- paho's thread -----------------------------------------------------------------------

    def observe(self, message: Accepted) -> None:
        """Fold in an accepted device message (paho's thread, before it is committed)."""
        with self._lock:  # the mark and its evidence go into the live state together
            if self._counted.seen_before(message):
                return  # a redelivered duplicate is not new evidence
            observation = self._engine.observe(message)
            if observation.resends:
                observation.resends = [r for r in observation.resends if not self.awaits(r.action)]
            if observation.changed is not None and self._loop is not None and self.changes:
                change = DeviceChanged(observation.changed)
                self._loop.call_soon_threadsafe(self.changes.publish, change)
            if not _says_anything(observation):
                return
            self._said.append(observation)
        # More evidence for an open alert (a device repeating itself) waits for the next
        # tick, within a second; anything that changes an alert or asks for action goes now.
        urgent = (
            observation.sessions
            or observation.resends
            or any(t.change is not Change.UPDATED for t in observation.transitions)
        )
        if urgent and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- start -------------------------------------------------------------------------------

    def restore_marks(
        self, saved: Mapping[str, Iterable[Mark]], counted_until: Mapping[str, float | None]
    ) -> None:
        """At start: the marks saved with the live state (messages it already counted)."""
        with self._lock:
            self._counted.restore(saved, counted_until)

    def replay(self, messages: Iterable[Accepted]) -> int:
        """At start, before ingest: fold in what was stored after the last snapshot, as
        ingest did (docs/architecture.md, "Start-up"). What the engine says is acted on once
        the runner starts. Return how many messages were new to the live state."""
        counted = 0
        with self._lock:
            for message in messages:
                if self._counted.seen_before(message):
                    continue
                counted += 1
                observation = self._engine.observe(message)
                if _says_anything(observation):
                    self._said.append(observation)
        if self._said:
            self._wake.set()
        return counted

    # -- the event loop: what the engine said ------------------------------------------------

    async def news(self) -> Observation:
        """Wait until the engine said something; all of it, merged, in order."""
        self._loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            merged = self.take()
            if _says_anything(merged):
                return merged

    def take(self) -> Observation:
        """Everything the engine said that is not taken yet, merged, in order."""
        merged = Observation()
        with self._lock:
            while self._said:
                more = self._said.popleft()
                merged.transitions += more.transitions
                merged.sessions += more.sessions
                merged.resends += more.resends
        return merged

    def _said_now(self, transitions: list[Transition]) -> None:
        """Under the lock: the engine said this; wake the runner."""
        if transitions:
            self._said.append(Observation(transitions))
        if self._said:
            self._wake.set()

    # -- the event loop: asking the engine ---------------------------------------------------

    def tick(self) -> None:
        """One evaluation of every rule at the clock's now."""
        now = self._clock()
        with self._lock:
            self._said_now(self._engine.tick(now))

    def acknowledge(self, alert_id: str, who: str) -> Alert | None:
        """Acknowledge the open alert `alert_id`; the alert already acknowledged is returned
        as it is; None when no open alert has this id or it cannot be acknowledged."""
        with self._lock:
            key = next((k for k, a in self._engine.alerts.items() if a.id == alert_id), None)
            if key is None:
                return None
            transition = self._engine.acknowledge(key, who, self._clock())
            if transition is None:  # acknowledged already: asking again changes nothing
                current = self._engine.alerts.get(key)
                acknowledged = current is not None and current.state is AlertState.ACKNOWLEDGED
                return current if acknowledged else None
            self._said_now([transition])
            return transition.alert

    def command_failed(self, subject: str) -> None:
        """A command to `subject` was not carried out: raise `command_failed`."""
        with self._lock:
            self._said_now([self._engine.command_failed(subject, self._clock())])

    def confirm(self, action: Action) -> None:
        """The device acknowledged what the desired state asked of it."""
        with self._lock:
            self._engine.desired.confirm(action)

    def release_port(self, device: str, port: int) -> None:
        """A person switches the port on: the cut-offs holding it off are released."""
        with self._lock:
            self._engine.desired.release_port(device, port)

    def cut_by(self, station: str) -> dict[int, set[str]]:
        """Port → the alerts whose cut-offs list it (a garage's smoke for a station inside)."""
        with self._lock:
            return self._cut_by(station)

    def _cut_by(self, station: str) -> dict[int, set[str]]:
        found: dict[int, set[str]] = {}
        for c in self._engine.desired.of(station):
            if c.port is not None:
                found.setdefault(c.port, set()).add(c.alert_id)
        return found

    def switch_on_blockers(
        self, station: str, ports: Collection[int]
    ) -> dict[int, list[switch_on.Blocker]]:
        """For each of `ports`, why switching it on would be refused now, by the power
        request's guards in their order (docs/rules.md, "Desired state"); empty: it would be
        sent. For the staff console's list of cut-offs: a station's rules evaluated once for
        all its ports. A station another instance owns: as its owner last copied it."""
        with self._lock:
            if station in self._engine.stations:
                return self._blockers(station, ports)
            if self._copies is not None:
                return self._copies.blockers(station, ports)
            return {port: [] for port in ports}

    def _blockers(self, station: str, ports: Collection[int]) -> dict[int, list[switch_on.Blocker]]:
        engine, now = self._engine, self._clock()
        alerts, cut_by = engine.alerts.values(), self._cut_by(station)
        firing = engine.firing_cutoffs_of(station, ports, now)
        offline = [] if engine.reachable(station, now) else [switch_on.offline(station)]
        return {
            port: switch_on.unacknowledged(alerts, station, port, cut_by=cut_by.get(port, set()))
            + switch_on.firing(firing[port])
            + offline
            for port in ports
        }

    def firing_cutoffs(self, station: str, port: int) -> list[tuple[RuleId, str]]:
        """The rules that would cut this port now (see `Engine.firing_cutoffs`)."""
        with self._lock:
            return self._engine.firing_cutoffs(station, port, self._clock())

    def firing_cutoffs_of(
        self, station: str, ports: Collection[int]
    ) -> dict[int, list[tuple[RuleId, str]]]:
        """`firing_cutoffs` of several ports of one station, in one evaluation."""
        with self._lock:
            return self._engine.firing_cutoffs_of(station, ports, self._clock())

    def reachable(self, device: str) -> bool:
        """Whether a command published now can reach the device (`Engine.reachable`)."""
        with self._lock:
            return self._engine.reachable(device, self._clock())

    # -- reads -------------------------------------------------------------------------------

    def read(self, view: Callable[[Reading], T]) -> T:
        """`view` of the stations, garages, open alerts and desired state (with the copies of
        devices another instance owns), taken under the lock (keep it short: paho's thread
        waits meanwhile)."""
        engine, copies = self._engine, self._copies
        with self._lock:
            if copies is None:
                return view(Reading(engine.stations, engine.garages, engine.alerts, engine.desired))
            return view(
                Reading(
                    ChainMap(engine.stations, copies.stations),
                    ChainMap(engine.garages, copies.garages),
                    ChainMap(engine.alerts, copies.alerts),
                    [*engine.desired, *copies.cutoffs()],
                )
            )

    def station(self, station: str, view: Callable[[StationLive, Collection[Alert]], T]) -> T:
        """`view` of one station and the open alerts, under the lock."""
        with self._lock:
            live = self._engine.stations.get(station)
            if live is None and self._copies is not None:
                return view(self._copies.stations[station], self._every_alert())
            return view(self._engine.stations[station], self._every_alert())

    def garage(self, garage: str, view: Callable[[GarageLive, Collection[Alert]], T]) -> T:
        """`view` of one garage and the open alerts, under the lock."""
        with self._lock:
            live = self._engine.garages.get(garage)
            if live is None and self._copies is not None:
                return view(self._copies.garages[garage], self._every_alert())
            return view(self._engine.garages[garage], self._every_alert())

    def _every_alert(self) -> Collection[Alert]:
        """Under the lock: the open alerts, the copied ones too."""
        if self._copies is None:
            return self._engine.alerts.values()
        return [*self._engine.alerts.values(), *self._copies.alerts.values()]

    # -- copies (`--partition`) --------------------------------------------------------------

    def copy_of(self, device: str) -> bytes | None:
        """What another instance needs to show `device` (one of ours), as it is now, encoded
        under the lock (paho's thread changes the state in place)."""
        with self._lock:
            engine = self._engine
            station, garage = engine.stations.get(device), engine.garages.get(device)
            if station is None and garage is None:
                return None
            cutoffs = engine.desired.of(device)
            cut = {c.port for c in cutoffs if c.port is not None and c.gate is None}
            return encode(
                LiveCopy(
                    device,
                    station=station,
                    garage=garage,
                    alerts=tuple(engine.alerts_of(device)),
                    cutoffs=tuple(cutoffs),
                    held_off=tuple(
                        (port, tuple(found))
                        for port, found in self._blockers(device, sorted(cut)).items()
                    )
                    if station is not None
                    else (),
                )
            )

    def owner_gone(self, owned: Callable[[str], bool]) -> None:
        """The instance that owns the devices `owned` says yes to is gone (paho's thread):
        their copies are shown offline until it, or its standby, copies them again."""
        if self._copies is None:
            return
        with self._lock:
            devices = [d for d in (*self._copies.stations, *self._copies.garages) if owned(d)]
            changed = self._copies.orphaned(devices)
        if self._loop is not None and self.changes:
            for device in changed:
                self._loop.call_soon_threadsafe(self.changes.publish, DeviceChanged(device))

    def copy_in(self, found: LiveCopy) -> None:
        """Keep the copy of a device another instance owns (paho's thread); the live stream
        hears of it as of any change."""
        if self._copies is None:
            return
        with self._lock:
            if found.device in self._engine.stations or found.device in self._engine.garages:
                return  # ours (a copy retained from before the partitions changed)
            changed = self._copies.put(found, self._clock())
        if changed is None or self._loop is None or not self.changes:
            return
        for transition in changed:  # the live stream tells of them as of this instance's
            change = AlertChanged(transition, copied=True)
            self._loop.call_soon_threadsafe(self.changes.publish, change)
        self._loop.call_soon_threadsafe(self.changes.publish, DeviceChanged(found.device))

    def open_alerts(self) -> list[Alert]:
        with self._lock:
            return list(self._engine.alerts.values())

    def cutoffs(self) -> tuple[int, list[Cutoff]]:
        """The desired state's version (it moves on every change) and its cut-offs."""
        with self._lock:
            return self._engine.desired.version, list(self._engine.desired)

    def every_cutoff(self) -> list[Cutoff]:
        """The cut-offs held on every device: this instance's, and those another instance
        holds as it last copied them (`--partition`)."""
        with self._lock:
            if self._copies is None:
                return list(self._engine.desired)
            every = [*self._engine.desired, *self._copies.cutoffs()]
        return sorted(every, key=lambda c: (c.since, c.key))  # oldest first, as each is

    def devices(self) -> list[str]:
        return [*self._engine.stations, *self._engine.garages]

    def snapshot(self, devices: Iterable[str]) -> list[LiveRow]:
        """The rows to save of `devices`, each with the marks of what it counted."""
        now = self._clock()
        since = now.timestamp() - MARKS_SAVED_S
        rows = []
        for device in devices:
            with self._lock:  # one device at a time: paho's thread never waits for more
                live: StationLive | GarageLive | None = self._engine.stations.get(
                    device
                ) or self._engine.garages.get(device)
                if live is None:
                    continue
                marks, until = self._counted.marks(device, since), self._counted.until(device)
                rows.append(live_state_row(live, marks, now, counted_until=until))
        return rows


def _says_anything(observation: Observation) -> bool:
    return bool(observation.transitions or observation.sessions or observation.resends)
