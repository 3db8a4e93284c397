"""Runs the pure rules engine inside the service: feeds it, ticks it, acts on what it says."""

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

import aiosqlite

from facilities.charging import state as charging
from facilities.counted import MARKS_SAVED_S, Counted
from facilities.garage import state as garage
from facilities.messages import Accepted, MessageKind
from facilities.mqtt.commands import CommandSender, Outcome, Target
from facilities.mqtt.session import BrokerLink
from facilities.rules.alerts import Alert, Change, Transition, alert_payload
from facilities.rules.engine import Engine, Observation
from facilities.rules.verdicts import Action, ActionKind
from facilities.store import alerts as alert_store
from facilities.store import commands as outbox
from facilities.store import sessions as session_store
from facilities.store import snapshots
from facilities.store.commands import Queued
from facilities.store.db import SharedWriter
from facilities.wire import CommandAck, CommandAction

log = logging.getLogger(__name__)

TICK_S = 1.0  # time-based rules are evaluated every second on the server's clock
SNAPSHOT_EVERY_S = 5.0  # live state (timers) is saved this often, and at shutdown
# /healthz says the rules are not doing their job when the tick has not run for five ticks,
# or one of their writes (alerts, sessions, snapshots: milliseconds each) has waited 3 s:
# well before the database's 5 s busy timeout fails it (store/db.py).
TICK_LATE_S = 5 * TICK_S
WRITE_STUCK_S = 3.0
# A cut-off the device refused or never acked is not re-asserted on each of its messages
# (every 10 s, docs/protocol.md) but once a minute: command_failed already calls a person.
RESEND_QUIET_S = 60.0

_COMMANDS = {
    ActionKind.POWER_OFF_PORT: CommandAction.POWER_OFF,
    ActionKind.POWER_OFF_STATION: CommandAction.POWER_OFF,
    ActionKind.OPEN_GATE: CommandAction.OPEN,
}
_ACK_KINDS = frozenset({MessageKind.STATION_ACK, MessageKind.GATE_ACK})
T = TypeVar("T")

Clock = Callable[[], datetime]


class Listener(Protocol):
    """Told on the event loop when a device's visible state or an alert changed (the live
    stream of the API). Must not block: it runs between the rules' own work."""

    def device_changed(self, device: str) -> None: ...

    def alert_changed(self, transition: Transition) -> None: ...


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def utc_now() -> datetime:
    return datetime.now(UTC)


class RulesRunner:
    """The engine's adapter: paho's thread feeds it (before the batch commits, so a safety
    cut-off never waits for a flush); asyncio tasks tick it, persist what changed, publish
    alerts and send the commands it asks for."""

    def __init__(
        self,
        engine: Engine,
        db: SharedWriter,
        link: BrokerLink,
        commands: CommandSender,
        *,
        clock: Clock = utc_now,
        tick_s: float = TICK_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self._db = db
        self._link = link
        self._commands = commands
        self._clock = clock
        self._tick_s = tick_s
        self._monotonic = monotonic
        self._ticked = monotonic()  # heartbeats for /healthz (`stalls`)
        self._writing_since: float | None = None
        # Silence before this start is the service's, not the devices': see Engine.reachable.
        engine.listening_since = clock()
        self._lock = threading.Lock()  # the engine is fed from paho's thread and ticked here
        # Bound now (the service builds this inside its event loop), so that messages that
        # arrive before `run` starts still wake the processing at once.
        self._loop: asyncio.AbstractEventLoop | None = _running_loop()
        # What the engine said, in the order it said it (appended under the engine lock).
        self._pending: deque[Observation] = deque()
        self._wake = asyncio.Event()
        self._counted = Counted()  # which messages the live state holds (engine lock)
        self._tasks: asyncio.TaskGroup | None = None
        # The rules' commands started and not finished: kept in the outbox at a stop.
        self._inflight: dict[str, Queued] = {}
        self.listeners: list[Listener] = []  # told, on the event loop, what changed
        self._sending: Counter[Action] = Counter()  # the rules' commands awaiting their ack
        self._quiet_until: dict[Action, datetime] = {}  # failed: not re-asserted before
        self._saved_desired = engine.desired.version

    # -- paho's thread -----------------------------------------------------------------------

    def observe(self, message: Accepted) -> None:
        """Called for every accepted message, on paho's thread, before it is committed."""
        route, payload = message.route, message.payload
        if route.kind in _ACK_KINDS:
            assert isinstance(payload, CommandAck)
            self._commands.on_ack(route.device, route.gate, payload)
            return
        with self._lock:  # the mark and its evidence go into the live state together
            if self._counted.seen_before(message):
                return  # a redelivered duplicate is not new evidence
            observation = self.engine.observe(message)
            if observation.changed is not None and self._loop is not None and self.listeners:
                # one wake-up of the loop per change, whatever the number of listeners
                self._loop.call_soon_threadsafe(self._device_changed, observation.changed)
            if not (observation.transitions or observation.sessions or observation.resends):
                return
            self._pending.append(observation)
        # More evidence for an open alert (a device repeating itself) waits for the next
        # tick, within a second; anything that changes an alert or asks for action goes now.
        urgent = (
            observation.sessions
            or observation.resends
            or any(t.change is not Change.UPDATED for t in observation.transitions)
        )
        if urgent and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _device_changed(self, device: str) -> None:
        for listener in self.listeners:
            listener.device_changed(device)

    def restore_marks(
        self,
        saved: Mapping[str, Iterable[snapshots.Mark]],
        counted_until: Mapping[str, float | None],
    ) -> None:
        """At start: the marks saved with the live state (messages it already counted)."""
        with self._lock:
            self._counted.restore(saved, counted_until)

    def replay(self, messages: Iterable[Accepted]) -> int:
        """At start, before ingest and `run`: fold in what was stored after the last
        snapshot, as ingest did (docs/architecture.md, "Start-up"). What the engine says is
        handled once `run` starts, as for any message: an alert that the replay raises was
        never stored, so its action may never have gone out either. Return how many
        messages were new to the live state."""
        counted = 0
        with self._lock:
            for message in messages:
                if self._counted.seen_before(message):
                    continue
                counted += 1
                observation = self.engine.observe(message)
                if observation.transitions or observation.sessions or observation.resends:
                    self._pending.append(observation)
        if self._pending:
            self._wake.set()
        return counted

    # -- asyncio -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick, persist, publish and act until cancelled; save the live state on the way out."""
        self._loop = asyncio.get_running_loop()
        resend = await self._recover()
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                for queued in resend:
                    self._start(queued, _wanted(queued))
                tasks.create_task(self._ticker(), name="rules-tick")
                tasks.create_task(self._snapshots(), name="rules-snapshot")
                tasks.create_task(self._process(), name="rules-process")
        finally:
            self._tasks = None
            await self._store_pending()
            await self.save_state()

    async def _recover(self) -> list[Queued]:
        """At start: the rules' commands that a stop left unfinished are sent again (same id,
        the device dedups) while their alert is open; the others, and every other command
        still `pending` (nothing waits for its ack any more), are closed as `abandoned`."""
        with self._lock:
            open_alerts = {a.id for a in self.engine.alerts.values()}

        def why_not(queued: Queued) -> str | None:
            if queued.alert_id not in open_alerts:
                return "not sent again: its alert is closed"
            if not self.reachable(queued.device):
                # its broker session would deliver it late: the desired state sends the cut
                # again when the device is back (docs/rules.md, "Desired state")
                return "not sent again: the device is offline"
            return None

        async with self._write() as conn:
            resend, closed = await outbox.recover(
                conn,
                why_not=why_not,
                waiting=self._commands.waiting(),
                at=self._clock().timestamp(),
            )
        if resend or closed:
            log.warning("starting: %d commands sent again, %d closed", len(resend), closed)
        return resend

    async def _store_pending(self) -> None:
        """At shutdown: store what the engine said and was not handled yet, and keep every
        command not finished (not sent yet, or waiting for its ack) in the outbox, with its
        alert: the next start sends them."""
        with self._lock:
            left = list(self._pending)
            self._pending.clear()
        transitions = [t for o in left for t in o.transitions]
        sessions = [s for o in left for s in o.sessions]
        unsent = [_queued(a, t.alert, t.cause) for t in transitions for a in t.actions]
        kept = unsent + list(self._inflight.values())
        if kept:
            log.warning("stopping: %d commands kept to send at the next start", len(kept))
        if transitions or sessions or kept:
            async with self._db.transaction() as conn:
                await alert_store.save_transitions(conn, transitions)
                await session_store.save_sessions(conn, sessions)
                await outbox.keep(conn, kept, self._clock().timestamp())

    async def tick(self) -> None:
        """One evaluation of every rule at the clock's now (the ticker calls it every second)."""
        now = self._clock()
        with self._lock:
            transitions = self.engine.tick(now)
            if transitions:
                self._pending.append(Observation(transitions))
            if self._pending:  # also the updates that observe() left for the tick
                self._wake.set()
        self._ticked = self._monotonic()

    def stalls(self) -> list[str]:
        """Why the rules are not doing their job now (for /healthz), if they are not."""
        now, reasons = self._monotonic(), []
        if now - self._ticked > TICK_LATE_S:
            reasons.append(f"rules tick late ({now - self._ticked:.0f} s since the last)")
        writing = self._writing_since
        if writing is not None and now - writing > WRITE_STUCK_S:
            reasons.append(f"rules writer stuck ({now - writing:.0f} s on one write)")
        return reasons

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A transaction of the rules, timed for /healthz."""
        self._writing_since = self._monotonic()
        try:
            async with self._db.transaction() as conn:
                yield conn
        finally:
            self._writing_since = None

    async def acknowledge(self, key: tuple[str, str], who: str) -> Alert | None:
        with self._lock:
            transition = self.engine.acknowledge(key, who, self._clock())
            if transition is None:
                return None
            self._pending.append(Observation([transition]))
            self._wake.set()
        return transition.alert

    def read(self, view: Callable[[Engine], T]) -> T:
        """`view` of the live state, taken under the engine's lock (keep it short: paho's
        thread waits meanwhile)."""
        with self._lock:
            return view(self.engine)

    async def save_state(self) -> None:
        """Snapshot the live state: each device serialised under the lock (one at a time, so
        that paho's thread never waits for more than one), written outside it."""
        rows = self._snapshot([*self.engine.stations, *self.engine.garages])
        async with self._write() as conn:
            await snapshots.write_live_state(conn, rows)
            await self._save_desired(conn, always=True)

    def _snapshot(self, devices: Iterable[str]) -> list[snapshots.LiveRow]:
        """The live-state rows of `devices`, each with the marks of what it counted."""
        now = self._clock()
        since = now.timestamp() - MARKS_SAVED_S
        rows = []
        for device in devices:
            with self._lock:  # the state and the marks of what it counted, together
                live: charging.StationLive | garage.GarageLive | None = self.engine.stations.get(
                    device
                ) or self.engine.garages.get(device)
                if live is None:
                    continue
                marks, until = self._counted.marks(device, since), self._counted.until(device)
                rows.append(snapshots.live_state_row(live, marks, now, counted_until=until))
        return rows

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            await self.tick()

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_EVERY_S)
            await self.save_state()

    async def _process(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Everything waiting goes in one transaction: a device repeating the same
            # evidence many times a second must not cost a commit each time.
            merged = Observation()
            with self._lock:
                while self._pending:
                    more = self._pending.popleft()
                    merged.transitions += more.transitions
                    merged.sessions += more.sessions
                    merged.resends += more.resends
            if not (merged.transitions or merged.sessions or merged.resends):
                continue
            try:
                await self._handle(merged)
            except asyncio.CancelledError:
                # stopping mid-way: the transaction rolled back; `run` stores it on the way out
                # (without its actions: they were started, `run` keeps them from `_inflight`)
                started = [replace(t, actions=()) for t in merged.transitions]
                with self._lock:
                    self._pending.appendleft(Observation(started, merged.sessions))
                raise

    async def _handle(self, observation: Observation) -> None:
        """Act on, publish and store transitions, in the order the engine made them: only
        `_process` calls this, so an alert cleared and raised again is stored in that order."""
        # Commands first: a power-off must not wait for the database.
        started = [
            self._start_command(action, transition.alert, cause=transition.cause)
            for transition in observation.transitions
            for action in transition.actions
        ]
        started += [
            self._start_command(r.action, r.alert, cause=r.cause, again=True)
            for r in observation.resends
        ]
        changes = [t for t in observation.transitions if t.change is not Change.UPDATED]
        for transition in changes:
            self._publish(transition)
            self._log(transition)
        # The devices whose alerts changed are snapshotted in the same commit: a restart then
        # replays only what came after (docs/architecture.md, "Start-up"), never evidence
        # that these alerts already judged (an overload raised, cut and cleared in the last
        # seconds was raised a second time from an older snapshot).
        touched = dict.fromkeys(t.alert.device for t in observation.transitions)
        rows = self._snapshot(touched)
        async with self._write() as conn:
            await alert_store.save_transitions(conn, observation.transitions)
            await session_store.save_sessions(conn, observation.sessions)
            await snapshots.write_live_state(conn, rows)
            await self._save_desired(conn)
            # with their alerts, in one commit: from here on a crash sends them again at start
            await outbox.keep(conn, [q for q in started if q], self._clock().timestamp())
        # The live stream after the commit: a client told of a change reads it from the API
        # (staff routes read the database), and must find it there.
        for transition in changes:
            for listener in self.listeners:
                listener.alert_changed(transition)

    async def _save_desired(self, conn: aiosqlite.Connection, *, always: bool = False) -> None:
        """Store the desired state when it moved (in the caller's transaction); `always` at
        each snapshot (a few rows), which also covers a transaction rolled back after it."""
        with self._lock:
            version = self.engine.desired.version
            if version == self._saved_desired and not always:
                return
            rows = list(self.engine.desired)
        await snapshots.save_cutoffs(conn, rows)
        self._saved_desired = version

    def firing_cutoffs(self, station: str, port: int) -> list[str]:
        """The rules that would cut this port now (see `Engine.firing_cutoffs`)."""
        with self._lock:
            return self.engine.firing_cutoffs(station, port, self._clock())

    def reachable(self, device: str) -> bool:
        """Whether a command published now can reach the device (`Engine.reachable`)."""
        with self._lock:
            return self.engine.reachable(device, self._clock())

    def release_port(self, device: str, port: int) -> None:
        """A person switches the port on: the cut-offs holding it off are released."""
        with self._lock:
            self.engine.desired.release_port(device, port)

    def _start_command(
        self, action: Action, alert: Alert, *, cause: str | None, again: bool = False
    ) -> Queued | None:
        """Send what a rule asks for, unless the device is known offline: its broker session
        would queue the command and deliver it late; it stays in the desired state and is
        sent when the device is back. `again`: a cut-off re-asserted, not while the same
        command awaits its ack, nor for a while after it failed. `cause`: the device message
        that made it due, kept in the audit (None: the server's clock)."""
        if again and self._sending[action]:
            return None  # a first cut may repeat another alert's: each is audited with its alert
        now = self._clock()
        if again and now < self._quiet_until.get(action, now):
            return None
        if not self.reachable(action.device):
            log.warning("%s %s deferred: the device is offline", action.kind, action.device)
            return None
        return self._start(_queued(action, alert, cause), action)

    def _start(self, queued: Queued, wanted: Action) -> Queued:
        if self._tasks is None:
            raise RuntimeError("the rules runtime is not running")
        self._inflight[queued.id] = queued
        self._sending[wanted] += 1
        name = f"command-{queued.action}-{queued.device}"
        task = self._tasks.create_task(self._command(queued, wanted), name=name)
        task.add_done_callback(lambda _task: self._sending.subtract((wanted,)))
        return queued

    async def _command(self, queued: Queued, wanted: Action) -> None:
        target = Target(queued.device, port=queued.port, gate=queued.gate)
        spec = self.engine.site.stations.get(target.device) or self.engine.site.garages.get(
            target.device
        )
        thresholds = spec.thresholds if spec else self.engine.site.thresholds
        result = await self._commands.send(
            target,
            CommandAction(queued.action),
            reason=queued.reason,
            alert_id=queued.alert_id,
            timeout_s=thresholds.command_timeout_s,
            tries=thresholds.command_tries,
            command_id=queued.id,
            cause=queued.cause,
        )
        del self._inflight[queued.id]  # not when cancelled: a stop keeps it in the outbox
        if result.outcome is Outcome.ACKED:
            self._quiet_until.pop(wanted, None)
            with self._lock:
                self.engine.desired.confirm(wanted)
            return
        self._quiet_until[wanted] = self._clock() + timedelta(seconds=RESEND_QUIET_S)
        self.command_failed(target.subject)

    def command_failed(self, subject: str) -> None:
        """A command to `subject` was not carried out (no ack after its tries, or refused):
        raise `command_failed`, or raise it again after an acknowledgement."""
        with self._lock:
            transition = self.engine.command_failed(subject, self._clock())
            self._pending.append(Observation([transition]))
            self._wake.set()

    def _publish(self, transition: Transition) -> None:
        """`facilities/alerts/{rule}/{subject}`: retained while open, for displays that come
        and go; a clear is published, then the retained message is removed. Updates (more
        evidence for an open alert) are stored, not published."""
        alert = transition.alert
        topic = f"{self._link.topics.prefix}/alerts/{alert.rule}/{alert.subject}"
        body = json.dumps(alert_payload(transition), ensure_ascii=False)
        if alert.open:
            self._link.publish(topic, body, retain=True)
        else:
            self._link.publish(topic, body)
            self._link.publish(topic, b"", retain=True)

    @staticmethod
    def _log(transition: Transition) -> None:
        alert = transition.alert
        log.warning(
            "alert %s %s %s (%s, value %s)%s",
            transition.change,
            alert.rule,
            alert.subject,
            alert.severity,
            alert.value,
            f", caused by {transition.cause}" if transition.cause else "",
        )


def _queued(action: Action, alert: Alert, cause: str | None) -> Queued:
    """A rules' command for `action`, with a fresh id."""
    command = _COMMANDS[action.kind]
    return Queued(
        uuid.uuid4().hex,
        action.device,
        action.port,
        action.gate,
        command,
        alert.rule,
        alert.id,
        cause,
    )


def _wanted(queued: Queued) -> Action:
    """The rule's action a command of the outbox carries out."""
    if queued.gate is not None:
        return Action(ActionKind.OPEN_GATE, queued.device, gate=queued.gate)
    if queued.port is not None:
        return Action(ActionKind.POWER_OFF_PORT, queued.device, port=queued.port)
    return Action(ActionKind.POWER_OFF_STATION, queued.device)
