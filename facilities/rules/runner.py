"""Acts on what the rules engine says: stores it, publishes alerts, sends the commands."""

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection
from datetime import UTC, datetime

from facilities.alerts import Change, Transition, alert_payload
from facilities.mqtt.commands import CommandSender
from facilities.mqtt.session import BrokerLink
from facilities.rules.commands import RuleCommands, queued_for
from facilities.rules.engine import Observation
from facilities.rules.live_state import AlertChanged, LiveState
from facilities.store import alerts as alert_store
from facilities.store import commands as outbox
from facilities.store import sessions as session_store
from facilities.store import snapshots
from facilities.store.commands import Queued
from facilities.store.db import SharedWriter
from facilities.store.sql import Connection
from facilities.write_faults import WriteFaults, database_fault

log = logging.getLogger(__name__)

TICK_S = 1.0  # time-based rules are evaluated every second on the server's clock
SNAPSHOT_EVERY_S = 5.0  # live state (timers) is saved this often, and at shutdown
# /healthz says the rules are not doing their job when the tick has not run for five ticks,
# or one of their writes (alerts, sessions, snapshots: milliseconds each) has waited 3 s:
# well before the database's 5 s busy timeout fails it (store/db.py).
TICK_LATE_S = 5 * TICK_S
WRITE_STUCK_S = 3.0
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class RulesRunner:
    """Acts on what the engine says: ticks the live state, stores what changed, publishes
    alerts, sends the commands the rules ask for, and snapshots the live state."""

    def __init__(
        self,
        live: LiveState,
        db: SharedWriter,
        link: BrokerLink,
        commands: CommandSender,
        *,
        clock: Clock = utc_now,
        tick_s: float = TICK_S,
        monotonic: Callable[[], float] = time.monotonic,
        owned: Collection[str] | None = None,
    ) -> None:
        self._live = live
        # `--partition`: the outbox and the desired state stored are only these devices'
        self._owned = owned
        self._db = db
        self._link = link
        self._commands = commands
        self._clock = clock
        self._tick_s = tick_s
        self._monotonic = monotonic
        self._ticked = monotonic()  # heartbeats for /healthz (`stalls`)
        self._writing_since: float | None = None
        self._rule_commands = RuleCommands(live, commands, clock=clock)
        self._saved_desired = live.cutoffs()[0]
        # Acted on (commands started, alerts published) and not stored yet, in order.
        self._unstored: list[tuple[Observation, list[Queued]]] = []
        self._to_store = asyncio.Event()
        self.faults = WriteFaults("rules writer", monotonic=monotonic)

    # -- asyncio -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick, persist, publish and act until cancelled; save the live state on the way out."""
        self._ticked = self._monotonic()
        self._saved_desired = self._live.cutoffs()[0]
        resend = await self._recover()
        try:
            async with asyncio.TaskGroup() as tasks:
                self._rule_commands.bind(tasks)
                for queued in resend:
                    self._rule_commands.resend(queued)
                tasks.create_task(self._ticker(), name="rules-tick")
                tasks.create_task(self._snapshots(), name="rules-snapshot")
                tasks.create_task(self._process(), name="rules-process")
                tasks.create_task(self._store_news(), name="rules-store")
        finally:
            self._rule_commands.bind(None)
            await self._commands.settle()
            await self._store_pending()
            await self.save_state()

    async def _recover(self) -> list[Queued]:
        """At start: the rules' commands that a stop left unfinished are sent again (same id,
        the device dedups) while their alert is open; the others, and every other command
        still `pending` (nothing waits for its ack any more), are closed as `abandoned`."""
        open_alerts = {a.id for a in self._live.open_alerts()}

        def why_not(queued: Queued) -> str | None:
            if queued.alert_id not in open_alerts:
                return "not sent again: its alert is closed"
            if not self._live.reachable(queued.device):
                # its broker session would deliver it late: the desired state sends the cut
                # again when the device is back (docs/rules.md, "Desired state")
                return "not sent again: the device is offline"
            return None

        async with self._write() as conn:
            resend, closed = await outbox.recover(
                conn,
                why_not=why_not,
                waiting=self._rule_commands.waiting(),
                at=self._clock().timestamp(),
                devices=self._owned,
            )
        if resend or closed:
            log.warning("starting: %d commands sent again, %d closed", len(resend), closed)
        return resend

    async def _store_pending(self) -> None:
        """At shutdown: store what the engine said and was not handled yet, and keep every
        command not finished (not sent yet, or waiting for its ack) in the outbox, with its
        alert: the next start sends them."""
        left = self._live.take()
        # what was acted on and not stored: its commands were started (in flight, or done)
        acted, _ = _merged(self._unstored)
        self._unstored.clear()
        transitions = acted.transitions + left.transitions
        sessions = acted.sessions + left.sessions
        unsent = [queued_for(a, t.alert, t.cause) for t in left.transitions for a in t.actions]
        kept = unsent + self._rule_commands.inflight()
        if kept:
            log.warning("stopping: %d commands kept to send at the next start", len(kept))
        if transitions or sessions or kept:
            async with self._db.transaction() as conn:
                await alert_store.save_transitions(conn, transitions)
                await session_store.save_sessions(conn, sessions)
                await outbox.keep(conn, kept, self._clock().timestamp())

    async def tick(self) -> None:
        """One evaluation of every rule at the clock's now (the ticker calls it every second)."""
        self._live.tick()  # also wakes `_process` for the updates that waited for the tick
        self._ticked = self._monotonic()

    def stalls(self) -> list[str]:
        """Why the rules are not doing their job now (for /healthz), if they are not."""
        now, reasons = self._monotonic(), []
        if now - self._ticked > TICK_LATE_S:
            reasons.append(f"rules tick late ({now - self._ticked:.0f} s since the last)")
        writing = self._writing_since
        if writing is not None and now - writing > WRITE_STUCK_S:
            reasons.append(f"rules writer stuck ({now - writing:.0f} s on one write)")
        for faults in (self.faults, self._commands.faults):
            reason = faults.reason()
            if reason is not None:
                reasons.append(reason)
        return reasons

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[Connection]:
        """A transaction of the rules, timed for /healthz."""
        self._writing_since = self._monotonic()
        try:
            async with self._db.transaction() as conn:
                yield conn
        finally:
            self._writing_since = None

    async def save_state(self) -> None:
        """Snapshot the live state: each device serialised under the lock (one at a time, so
        that paho's thread never waits for more than one), written outside it."""
        rows = self._live.snapshot(self._live.devices())
        async with self._write() as conn:
            await snapshots.write_live_state(conn, rows)
            saved = await self._save_desired(conn, always=True)
        self._saved_desired = saved

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            await self.tick()

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_EVERY_S)
            if self._unstored:
                # Not ahead of what was acted on and not stored yet (the database failed):
                # the marks of the messages that raised an alert are committed with the alert
                # and its outbox rows, never before, or a crash in between would leave them
                # counted (not judged again when redelivered) and the alert unstored.
                continue
            try:
                await self.save_state()
            except Exception as exc:  # a database that cannot take it: the next one, then
                if not database_fault(exc):
                    raise
                self.faults.failed(
                    exc, f"the live state's snapshot (the next in {SNAPSHOT_EVERY_S:.0f} s)"
                )
            else:
                self.faults.succeeded()

    async def _process(self) -> None:
        """Act on what the engine says as soon as it says it, and hand it to `_store_news`:
        a cut-off never waits for the database, nor for what an earlier alert is waiting to
        store."""
        while True:
            merged = await self._live.news()
            self._unstored.append((merged, self._act(merged)))
            self._to_store.set()

    async def _store_news(self) -> None:
        """Store what was acted on, in the order the engine said it (an alert cleared and
        raised again is stored in that order). Everything waiting goes in one transaction: a
        device repeating the same evidence many times a second must not cost a commit each
        time. A database that cannot take it is waited out (write_faults.py); `run` stores
        what is left at a stop."""
        while True:
            await self._to_store.wait()
            self._to_store.clear()
            while self._unstored:
                taken = len(self._unstored)
                observation, started = _merged(self._unstored[:taken])
                what = f"{len(observation.transitions)} alert changes and their cut-offs"
                store = functools.partial(self._store, observation, started)
                await self.faults.until_written(store, what)
                del self._unstored[:taken]
                # The live stream after the commit: a client told of a change reads it from
                # the API (staff routes read the database), and must find it there.
                for transition in observation.transitions:
                    if transition.change is not Change.UPDATED:
                        self._live.changes.publish(AlertChanged(transition))

    def _act(self, observation: Observation) -> list[Queued]:
        """Start the commands and publish the alert changes the engine made; return the
        commands started."""
        started = [
            self._rule_commands.start_for(action, transition.alert, cause=transition.cause)
            for transition in observation.transitions
            for action in transition.actions
        ]
        started += [
            self._rule_commands.start_for(r.action, r.alert, cause=r.cause, again=True)
            for r in observation.resends
        ]
        for transition in observation.transitions:
            if transition.change is not Change.UPDATED:
                self._publish(transition)
                self._log(transition)
        return [q for q in started if q]

    async def _store(self, observation: Observation, started: list[Queued]) -> None:
        """One transaction: the transitions, sessions, the touched devices' live state, the
        desired state, and the commands started and not finished (the outbox)."""
        # The devices whose alerts changed are snapshotted in the same commit: a restart then
        # replays only what came after (docs/architecture.md, "Start-up"), never evidence
        # that these alerts already judged (an overload raised, cut and cleared in the last
        # seconds was raised a second time from an older snapshot).
        touched = dict.fromkeys(t.alert.device for t in observation.transitions)
        rows = self._live.snapshot(touched)
        async with self._write() as conn:
            await alert_store.save_transitions(conn, observation.transitions)
            await session_store.save_sessions(conn, observation.sessions)
            await snapshots.write_live_state(conn, rows)
            saved = await self._save_desired(conn)
            # with their alerts, in one commit: from here on a crash sends them again at start.
            # Not one that finished meanwhile (the database was locked): its outcome took it
            # out of the outbox already, or will after this commit (the same writer's lock).
            inflight = {q.id for q in self._rule_commands.inflight()}
            kept = [q for q in started if q.id in inflight]
            await outbox.keep(conn, kept, self._clock().timestamp())
        self._saved_desired = saved  # committed: not when the database refused it

    async def _save_desired(self, conn: Connection, *, always: bool = False) -> int:
        """Store the desired state when it moved (in the caller's transaction); `always` at
        each snapshot (a few rows). Return the version stored, which the caller marks saved
        once it committed (a write tried again after a rollback stores it again)."""
        version, rows = self._live.cutoffs()
        if version == self._saved_desired and not always:
            return version
        await snapshots.save_cutoffs(conn, rows, devices=self._owned)
        return version

    def _publish(self, transition: Transition) -> None:
        """`facilities/alerts/{rule}/{subject}`: retained while open, for displays that come
        and go; a clear is published, then the retained message is removed. Updates (more
        evidence for an open alert) are stored, not published."""
        alert = transition.alert
        topic = self._link.topics.alert(alert.rule, alert.subject)
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


def _merged(acted: list[tuple[Observation, list[Queued]]]) -> tuple[Observation, list[Queued]]:
    """What several observations said, in order, and the commands started for them."""
    merged, started = Observation(), []
    for observation, commands in acted:
        merged.transitions += observation.transitions
        merged.sessions += observation.sessions
        started += commands
    return merged, started
