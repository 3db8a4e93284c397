"""Send a command, await its ack, retry, and keep the audit trail (docs/protocol.md, Commands)."""

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from facilities.metrics import CommandMetrics
from facilities.mqtt.session import BrokerLink
from facilities.store import commands as outbox
from facilities.store.db import SharedWriter
from facilities.store.sql import Connection
from facilities.wire import Command, CommandAck, CommandAction
from facilities.write_faults import WriteFaults

log = logging.getLogger(__name__)

# docs/protocol.md: a command that gets no ack within its timeout (default 5 s) is reported as
# such; docs/rules.md: retried, 3 tries, then command_failed.
ACK_TIMEOUT_S = 5.0
TRIES = 3
# A command expires this long after the service stops waiting for the ack of its last try
# (docs/protocol.md: "a little after its last try"): room for the broker's delivery and for
# the clock of an NTP-synchronised device, which is within tens of milliseconds of ours.
EXPIRES_MARGIN_S = 1.0
# A command's outcome waits at most this long for its audit row: a database that cannot take
# it (locked, failing) must not hold back what comes of the outcome (`command_failed`). The
# row is written, after every audit row asked for before it, once the database can.
AUDIT_WAIT_S = 1.0

OnAck = Callable[[CommandAck], None]


class Outcome(StrEnum):
    ACKED = "acked"
    REFUSED = "refused"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a command goes: a station (optionally one port) or a gate."""

    device: str
    port: int | None = None
    gate: str | None = None

    @property
    def subject(self) -> str:
        """The alert subject of this target (`cs-07`, `cs-07/3`, `g-hc3/north`)."""
        if self.gate is not None:
            return f"{self.device}/{self.gate}"
        return f"{self.device}/{self.port}" if self.port is not None else self.device


@dataclass(frozen=True, slots=True)
class Result:
    id: str
    target: Target
    action: CommandAction
    outcome: Outcome
    tries: int
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class _Order:
    """One command as every try sends it: the same id, the same `expires`."""

    id: str
    target: Target
    action: CommandAction
    reason: str
    requested_by: str
    alert_id: str | None
    resident: str | None
    cause: str | None
    expires: float


class CommandSender:
    """Publishes commands on the broker link and matches the devices' acks to them."""

    def __init__(
        self,
        link: BrokerLink,
        db: SharedWriter,
        *,
        timeout_s: float = ACK_TIMEOUT_S,
        tries: int = TRIES,
        clock: Callable[[], float] = time.time,
        metrics: CommandMetrics | None = None,
    ) -> None:
        self._link = link
        self._metrics = metrics
        self._db = db
        self._timeout_s = timeout_s
        self._tries = tries
        self._clock = clock
        # Told of every ack as paho's thread hears it: (device, gate, ack).
        self.heard: Callable[[str, str | None, CommandAck], None] | None = None
        # id → (target, the ack's future, told of the ack at once): the commands awaiting an ack
        self._pending: dict[str, tuple[Target, asyncio.Future[CommandAck], OnAck | None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.faults = WriteFaults("command audit")
        self._last_audit: asyncio.Task[None] | None = None
        self._audits: set[asyncio.Task[None]] = set()

    async def send(
        self,
        target: Target,
        action: CommandAction,
        *,
        reason: str,
        requested_by: str = "rules",
        alert_id: str | None = None,
        resident: str | None = None,
        timeout_s: float | None = None,
        tries: int | None = None,
        command_id: str | None = None,
        cause: str | None = None,
        on_ack: OnAck | None = None,
    ) -> Result:
        """Send, await the ack (timeout, retries), store the outcome; never raises for a
        device that is silent or refuses. The command is published before it is audited:
        a power-off must not wait for the database. Every copy carries the same `expires`, a
        little after the service stops waiting for the last try's ack, and goes out with the
        MQTT 5 Message Expiry Interval that ends then: a device that was away never acts on
        it late. `command_id`: a command sent again after a restart keeps its id. `cause`:
        the device message that made a rule ask for it, for the audit. `on_ack`: called
        with the ack as it is heard, in the order of the device's messages, before this
        returns (which waits for the outcome's audit row)."""
        self._loop = asyncio.get_running_loop()
        started = time.perf_counter()
        wait_s = timeout_s or self._timeout_s
        max_tries = tries or self._tries
        order = _Order(
            command_id or uuid.uuid4().hex,
            target,
            action,
            reason=reason,
            requested_by=requested_by,
            alert_id=alert_id,
            resident=resident,
            cause=cause,
            expires=self._clock() + wait_s * max_tries + EXPIRES_MARGIN_S,
        )
        future: asyncio.Future[CommandAck] = self._loop.create_future()
        self._pending[order.id] = (target, future, on_ack)
        try:
            attempt, ack = await self._until_acked(
                order, future, wait_s=wait_s, max_tries=max_tries
            )
        finally:
            self._pending.pop(order.id, None)
        outcome = Outcome.TIMEOUT if ack is None else Outcome.ACKED if ack.ok else Outcome.REFUSED
        error = ack.error if ack is not None else None
        seconds = time.perf_counter() - started
        result = Result(order.id, target, action, outcome, attempt, error, seconds)
        await self._finish(result)
        return result

    async def _until_acked(
        self, order: _Order, future: asyncio.Future[CommandAck], *, wait_s: float, max_tries: int
    ) -> tuple[int, CommandAck | None]:
        """Publish and await the ack, up to `max_tries` times; the first try is audited (not
        awaited: a retry must not wait for the database). Return the tries made and the ack
        (None: none came)."""
        attempt, ack = 0, None
        while attempt < max_tries and ack is None:
            attempt += 1
            sent_at = self._publish(order)
            if attempt == 1:
                self._audit_start(order, sent_at)
            ack = await _ack_within(future, wait_s)
            if ack is None:
                log.warning(
                    "no ack for %s %s (try %d of %d)",
                    order.action,
                    order.target.subject,
                    attempt,
                    max_tries,
                )
        return attempt, ack

    def _publish(self, order: _Order) -> float:
        """Publish one try of the command; return its `ts` (when it was sent). The same id
        on every try: a device that got an earlier copy can tell."""
        sent_at = self._clock()
        command = Command(
            id=order.id,
            ts=sent_at,
            action=order.action,
            port=order.target.port,
            reason=order.reason,
            resident=order.resident,
            expires=order.expires,
        )
        self._link.publish(
            self._topic(order.target),
            command.model_dump_json(exclude_none=True),
            # whole seconds, rounded up: the broker never drops a copy that the device would
            # still accept
            expiry_s=math.ceil(order.expires - sent_at),
        )
        return command.ts

    async def _finish(self, result: Result) -> None:
        """Count, store and (unless acked) log a command's outcome."""
        if self._metrics is not None:
            answered = result.outcome is not Outcome.TIMEOUT
            self._metrics.done(
                result.action.value, result.outcome.value, result.seconds, answered=answered
            )
        await self._audit_end(result)
        if result.outcome is not Outcome.ACKED:
            log.error(
                "%s %s %s: %s",
                result.action,
                result.target.subject,
                result.outcome,
                result.error or "no ack",
            )

    def waiting(self) -> set[str]:
        """The ids of the commands waiting for their ack now."""
        return set(self._pending)

    def on_ack(self, device: str, gate: str | None, ack: CommandAck) -> None:
        """An ack heard on the broker (paho's thread): told to `heard` at once, in the order
        of the device's messages; the waiting command resolved on the event loop."""
        if self.heard is not None:
            self.heard(device, gate, ack)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._resolve, device, gate, ack)

    def _resolve(self, device: str, gate: str | None, ack: CommandAck) -> None:
        pending = self._pending.get(ack.id)
        if pending is None:
            return  # a late ack after the last try, or not ours
        target, future, on_ack = pending
        if (target.device, target.gate) != (device, gate):
            log.warning("ack for %s came from %s: ignored", ack.id, device)
            return
        if not future.done():
            future.set_result(ack)
            if on_ack is not None:
                # now, not when `send` resumes: a message the device sent after its ack is
                # acted on after this (paho's thread hands both over in the device's order)
                on_ack(ack)

    def _topic(self, target: Target) -> str:
        topics = self._link.topics
        if target.gate is not None:
            return topics.gate(target.device, target.gate, "command")
        return topics.station(target.device, "command")

    def _audit_start(self, order: _Order, sent_at: float) -> None:
        target = order.target
        sent = outbox.Sent(
            order.id,
            target.device,
            target.port,
            target.gate,
            order.action.value,
            order.reason,
            order.requested_by,
            order.alert_id,
            order.cause,
            sent_at,
        )
        self._audit(lambda conn: outbox.started(conn, sent), f"the audit row of {order.id}")

    async def _audit_end(self, result: Result) -> None:
        at = self._clock()

        async def finished(conn: Connection) -> None:
            await outbox.finished(
                conn,
                result.id,
                tries=result.tries,
                outcome=result.outcome.value,
                error=result.error,
                at=at,
            )

        written = self._audit(finished, f"the outcome of {result.id}")
        # Within AUDIT_WAIT_S when the database takes it: as soon as it is written (a client
        # told of the outcome finds it in the audit); later, in the background.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(written), AUDIT_WAIT_S)

    def _audit(
        self, write: Callable[[Connection], Awaitable[None]], what: str
    ) -> asyncio.Task[None]:
        """Write in a transaction of its own, after every audit asked for before it (a
        command's row before its outcome), tried again until the database takes it."""
        previous = self._last_audit

        async def in_order() -> None:
            if previous is not None:
                await asyncio.wait([previous])

            async def once() -> None:
                async with self._db.transaction() as conn:
                    await write(conn)

            await self.faults.until_written(once, what)

        task = asyncio.create_task(in_order(), name="command-audit")
        self._last_audit = task
        self._audits.add(task)  # a strong reference until it is done
        task.add_done_callback(self._audit_done)
        return task

    async def settle(self) -> None:
        """At a stop: the audit rows not written yet get AUDIT_WAIT_S, then are given up (as
        a crash would: the outbox and the start's recovery cover them)."""
        if self._audits:
            await asyncio.wait(list(self._audits), timeout=AUDIT_WAIT_S)
        for task in list(self._audits):
            task.cancel()
        if self._audits:
            await asyncio.wait(list(self._audits))

    def _audit_done(self, task: asyncio.Task[None]) -> None:
        self._audits.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a command's audit failed", exc_info=task.exception())


async def _ack_within(future: asyncio.Future[CommandAck], wait_s: float) -> CommandAck | None:
    """The ack, if it comes within `wait_s`; the future stays for the next try."""
    try:
        return await asyncio.wait_for(asyncio.shield(future), wait_s)
    except TimeoutError:
        # the ack may have come in the same turn of the loop as the timeout
        return future.result() if future.done() and not future.cancelled() else None
