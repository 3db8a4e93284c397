"""Requests for a device another instance owns (`--partition`), carried out by its owner:
asked on the owner's topic, answered on the asker's own (docs/scaling.md, "Requests for
another instance's devices")."""

# Only the owner of a device sends it commands: it alone hears the device's acks, and its
# rules hold the device's desired state. Any instance takes a person's request; one for a
# device another instance owns is handed to the owner as it was asked (who, from where,
# with which Idempotency-Key), and the owner checks, carries out and audits it exactly as
# if it had been asked itself. The asker passes on what the owner answered.

import asyncio
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import TypeAdapter, ValidationError

from facilities.access import Person
from facilities.alerts import Alert
from facilities.answers import Ask, Done
from facilities.errors import (
    DeviceRefused,
    DeviceTimedOut,
    RateLimited,
    Refusal,
    Unavailable,
    refusal_named,
)
from facilities.mqtt.session import BrokerLink, Delivery
from facilities.mqtt.topics import Topics
from facilities.partition import Partition

log = logging.getLogger(__name__)

# An ask its owner has not taken within this long is not carried out: the broker drops it
# (MQTT 5 Message Expiry) and the owner refuses one that comes later (its `not_after`), so a
# gate never opens after the person was told it could not be asked.
ASK_EXPIRY_S = 5
# How long an answer may take beyond the ask's expiry and the request's own time (its
# command's tries): the owner's audit and the trip back.
ANSWER_MARGIN_S = 3.0
# An answer topic is one of `Topics.answers`, with the 16 hex digits an instance draws.
_ANSWER_ID = re.compile(r"[0-9a-f]{16}")
# The longest wait a rate limit may ask for (a minute's window, and more): a bound on a
# figure that comes over the broker.
RETRY_AFTER_MAX_S = 3600.0

Kind = Literal["gate_open", "port_power", "acknowledge"]


@dataclass(frozen=True, slots=True)
class Asked:
    """A request as it travels to the owner of its device: what, and who asked it, from
    where, with which Idempotency-Key (the owner checks the person's rights again)."""

    kind: Kind
    person: Person
    device: str
    client: str = ""
    idempotency_key: str | None = None
    gate: str = ""
    port: int = 0
    on: bool = False
    alert_id: str = ""

    @property
    def ask(self) -> Ask:
        return Ask(self.person, self.client, self.idempotency_key)


@dataclass(frozen=True, slots=True)
class Refused:
    """A refusal as it travels back: its kind (`error`) and what the client is told."""

    error: str
    detail: str
    command_id: str = ""
    retry_after_s: float = 0.0
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class _Question:
    id: str
    reply_to: str
    asked: Asked
    not_after: float  # wall clock (s since the epoch): later, it is refused, not carried out


@dataclass(frozen=True, slots=True)
class _Answer:
    id: str
    done: Done | None = None
    alert: Alert | None = None
    refused: Refused | None = None


_QUESTION = TypeAdapter(_Question)
_ANSWER = TypeAdapter(_Answer)

# What carries out a request asked of this instance: a gate's or a port's answer, or an alert.
Serve = Callable[[Asked], Awaitable[Done | Alert]]


class NotAnswered(Unavailable):
    """The owner could not be asked, or did not answer in time: refused by the instance that
    took the request (which audits it), not by the owner. Not answering may still mean it was
    carried out: the same `Idempotency-Key` tells."""


class Owners:
    """Asks the owners of other partitions' devices, and carries out what the other
    instances ask of this one (`serve`, given once the requests are built)."""

    def __init__(
        self,
        topics: Topics,
        partition: Partition,
        *,
        running: Callable[[int], bool] = lambda _index: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._link: BrokerLink | None = None
        self._clock = clock
        self._topics = topics
        self._running = running  # whether partition K's instance says it is online
        # answers come to this instance alone: a topic of its own, drawn at each start
        self._reply_to = topics.answers(secrets.token_hex(8))
        self._asks = topics.asks(partition.slug)
        self._waiting: dict[str, asyncio.Future[_Answer]] = {}
        self._seen: dict[str, float] = {}  # asks taken, until they are past their expiry
        self._serving: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.serve: Serve | None = None
        self.asked = 0
        self.served = 0
        self.unreadable = 0

    @property
    def subscriptions(self) -> list[str]:
        """What this instance listens to: the asks of its partition and its own answers."""
        return [self._asks, self._reply_to]

    # -- asking ------------------------------------------------------------------------------

    async def ask(self, owner: Partition, asked: Asked, *, within_s: float) -> Done | Alert:
        """Have `owner`'s instance carry out `asked`; what it answered, or its refusal
        raised. 503 when there is no owner to ask or it does not answer in time."""
        link = self._link
        if link is None or not link.connected:
            raise NotAnswered("the service has no link to the broker")
        if not self._running(owner.index):
            raise NotAnswered(
                f"{asked.device} is served by the instance of partition {owner}, which is not"
                " running (its standby has not taken over yet)"
            )
        not_after = self._clock() + ASK_EXPIRY_S
        question = _Question(secrets.token_hex(8), self._reply_to, asked, not_after)
        waiting: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self._waiting[question.id] = waiting
        self.asked += 1
        wait_s = ASK_EXPIRY_S + within_s + ANSWER_MARGIN_S
        try:
            # QoS 0: never sent again after a reconnect, when the person has had an answer
            link.publish(
                self._topics.asks(owner.slug),
                _QUESTION.dump_json(question),
                expiry_s=ASK_EXPIRY_S,
                qos=0,
            )
            answer = await asyncio.wait_for(waiting, wait_s)
        except TimeoutError:
            raise NotAnswered(
                f"{asked.device} is served by the instance of partition {owner}, which did not"
                f" answer within {wait_s:g} s"
            ) from None
        finally:
            self._waiting.pop(question.id, None)
        if answer.refused is not None:
            raise refusal_of(answer.refused)
        found = answer.done or answer.alert
        if found is None:
            raise Unavailable(f"the instance of partition {owner} answered nothing")
        return found

    # -- serving -----------------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, _delivery: Delivery) -> bool:
        """An ask for this instance or an answer for it (paho's thread): taken, True; any
        other topic: False."""
        if topic == self._reply_to:
            try:
                answer = _ANSWER.validate_json(payload)
            except ValidationError:
                self._unreadable(topic)
                return True
            self._soon(self._answered, answer)
            return True
        if topic == self._asks:
            try:
                question = _QUESTION.validate_json(payload)
            except ValidationError:
                self._unreadable(topic)
                return True
            self._soon(self._start, question)
            return True
        return False

    async def run(self, link: BrokerLink) -> None:
        """Ask and answer over `link`, carrying out the asks on this event loop, until
        cancelled; then end what is still being carried out."""
        self._link, self._loop = link, asyncio.get_running_loop()
        try:
            await asyncio.Event().wait()
        finally:
            for task in list(self._serving):
                task.cancel()

    def _soon(self, callback: Callable[..., object], *args: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            log.warning("a request from another instance came before the service ran: dropped")
            return
        loop.call_soon_threadsafe(callback, *args)

    def _answered(self, answer: _Answer) -> None:
        waiting = self._waiting.get(answer.id)
        if waiting is not None and not waiting.done():
            waiting.set_result(answer)

    def _start(self, question: _Question) -> None:
        task = asyncio.get_running_loop().create_task(self._carry_out(question))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    def _first_time(self, question: _Question) -> bool:
        """Whether `question` is new (not one taken already: a copy the broker sent again)."""
        now = self._clock()
        for seen in [k for k, until in self._seen.items() if until < now - ASK_EXPIRY_S]:
            del self._seen[seen]
        if question.id in self._seen:
            return False
        self._seen[question.id] = question.not_after
        return True

    async def _carry_out(self, question: _Question) -> None:
        head = self._topics.answers("")
        reply_to = question.reply_to
        if not (reply_to.startswith(head) and _ANSWER_ID.fullmatch(reply_to[len(head) :])):
            self._unreadable(self._asks)
            return
        if not self._first_time(question):
            return
        self.served += 1
        try:
            if self.serve is None:
                raise Unavailable("the instance that owns the device is starting")
            if self._clock() > question.not_after:
                raise Unavailable(
                    f"the request for {question.asked.device} reached the instance that owns it"
                    " too late: not carried out"
                )
            found = await self.serve(question.asked)
            if isinstance(found, Done):
                answer = _Answer(question.id, done=found)
            else:
                answer = _Answer(question.id, alert=found)
        except Refusal as refusal:
            answer = _Answer(question.id, refused=refused_of(refusal))
        except Exception:  # a request must not stop the service: answered, and logged
            log.exception("a request asked by another instance failed: %s", question.asked)
            failed = Unavailable("the instance that owns the device failed to carry it out")
            answer = _Answer(question.id, refused=refused_of(failed))
        if self._link is not None:
            self._link.publish(reply_to, _ANSWER.dump_json(answer), expiry_s=ASK_EXPIRY_S, qos=0)

    def _unreadable(self, topic: str) -> None:
        self.unreadable += 1
        if self.unreadable == 1:
            log.warning("a message on %s could not be read (another version's?): ignored", topic)


def refused_of(refusal: Refusal) -> Refused:
    """A refusal as it travels back to the instance that was asked."""
    return Refused(
        refusal.error,
        refusal.detail,
        command_id=getattr(refusal, "command_id", ""),
        retry_after_s=float(getattr(refusal, "retry_after_s", 0)),
        replayed=refusal.replayed,
    )


def refusal_of(refused: Refused) -> Refusal:
    """The refusal the owner answered, to raise as if this instance had refused."""
    kind = refusal_named(refused.error)
    refusal: Refusal
    if kind is RateLimited:  # its detail ends with when to retry, which it adds again
        said = refused.detail.rsplit("; retry in ", 1)[0]
        wait = refused.retry_after_s
        wait = min(max(wait, 1.0), RETRY_AFTER_MAX_S) if math.isfinite(wait) else 60.0
        refusal = RateLimited(said, retry_after_s=wait)
    elif kind is DeviceRefused or kind is DeviceTimedOut:
        refusal = kind(refused.detail, command_id=refused.command_id)
    else:
        refusal = kind(refused.detail)
    refusal.replayed = refused.replayed
    return refusal
