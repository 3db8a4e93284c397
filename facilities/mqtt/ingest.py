"""Decode → batch → commit → ack. A message is acknowledged only once it is in SQLite."""

# Receiving, batching, acknowledging and counting are here; what a batch writes is
# ingest_batch.py's.

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from facilities.messages import Accepted, MessageKind, Rejected, RejectReason
from facilities.metrics import IngestMetrics
from facilities.mqtt.decode import Decoder
from facilities.mqtt.ingest_batch import (
    ACK_KINDS,
    AVAILABILITY_KINDS,
    DEFAULT_QUARANTINE_PER_DEVICE_HOUR,
    BatchWriter,
    Pending,
)
from facilities.mqtt.link_options import RECEIVE_MAXIMUM
from facilities.mqtt.rejections import Publisher, RejectionNotices
from facilities.mqtt.salvage import DATA_ERRORS, store_by_halves
from facilities.mqtt.session import Delivery
from facilities.store.sql import ERRORS, Connection
from facilities.store.telemetry import MessageRows, message_rows
from facilities.write_faults import WriteFaults

log = logging.getLogger(__name__)

# Flush when this many messages wait (executemany of ~1,000 rows is where SQLite's per-row
# cost flattens out: 233k rows/s measured) ...
BATCH_MAX = 1000
# ... or when the oldest has waited this long. The issue asks for at most 100 ms; 50 ms keeps
# ack lag low while batching a 2,000 msg/s district load ~100 to a commit.
FLUSH_INTERVAL_S = 0.05
# Messages received and not yet acknowledged that ingest holds before paho's thread waits for
# the writer: the window the link asks the broker for (~15 MB of ten-port messages; twice
# that took a 100,000-message drain past 150 MB).
WINDOW = RECEIVE_MAXIMUM
# The most paho's thread waits at a time. A writer slower than this (a database another
# process keeps locked) must not hold the rules back: past it the window is let go until the
# writer has caught up to half of it, and only the ceiling (~150 MB more) still holds.
WINDOW_WAIT_MAX_S = 0.25
CEILING = 10 * RECEIVE_MAXIMUM
# What a batch's counts read a message's kind from (a tuple: `Accepted | MessageRows` in the
# loop made a union object per message).
_ROUTED = (Accepted, MessageRows)
_LOG_PAYLOAD_CHARS = 120
_LOG_PER_REASON_PER_MINUTE = 10

# What is left once the batch was salvaged is the database's failure, not a message's: the
# batch is kept, unacknowledged, and written again (docs/reliability.md, "A database that
# cannot be written").
_WRITE_ERRORS: tuple[type[Exception], ...] = (*ERRORS, *DATA_ERRORS)


def _as_rows(message: Accepted, topic: str, raw: bytes) -> Accepted | MessageRows | Rejected:
    """What ingest keeps of an accepted message until its batch commits, once the rules have
    seen it: its rows (the payload's model objects are let go at once; store/telemetry.py
    MessageRows), or the message itself when it has none (acks, availability). A message
    whose rows cannot be made is quarantined rather than lost or left to stop paho's thread."""
    try:
        rows = message_rows(message)
    except Exception as exc:
        log.exception("cannot make the rows of %s", topic)
        return Rejected(
            topic,
            raw,
            RejectReason.SCHEMA_MISMATCH,
            repr(exc),
            message.received_at,
            message.route.device,
        )
    return message if rows is None else rows


class Link(Publisher, Protocol):
    """The broker link as ingest uses it: acks after each commit, and refusals told to their
    devices (facilities/mqtt/session.py BrokerLink)."""

    def ack(self, items: Sequence[Delivery]) -> int: ...


Listener = Callable[[Accepted], None]


class Ingest:
    """Batches what the broker delivers into SQLite and acknowledges it after each commit.

    `on_message` runs on paho's network thread: it decodes (pure, no I/O) and queues.
    `run` is the asyncio writer: it commits batches and then acks them.
    """

    def __init__(
        self,
        conn: Connection,
        decoder: Decoder,
        *,
        metrics: IngestMetrics,
        clock: Callable[[], float] = time.time,
        batch_max: int = BATCH_MAX,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        quarantine_quota: int = DEFAULT_QUARANTINE_PER_DEVICE_HOUR,
        window: int = WINDOW,
    ) -> None:
        self._decoder = decoder
        self._metrics = metrics
        self._clock = clock
        self._batch_max = batch_max
        self._flush_interval_s = flush_interval_s
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._inbox: list[Pending] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        # A batch the database could not take: written again before anything else.
        self._held: list[Pending] = []
        self.faults = WriteFaults("ingest writer")
        # Received and not yet acknowledged (or settled otherwise): at most `window`; the
        # link asks the broker for less (its Receive Maximum), which Mosquitto 2.0.11 does
        # not keep once acks flow (docs/performance.md, "A window the service keeps itself").
        self._window = window
        self._ceiling = max(window, CEILING)
        self._in_hand = 0
        self._window_let_go = False
        self._retry_in_s = 0.0
        self.peak_in_hand = 0
        self._log_budget: dict[RejectReason, tuple[float, int]] = {}
        self._writer = BatchWriter(conn, quarantine_quota=quarantine_quota)
        self._notices = RejectionNotices(decoder.topics, metrics=metrics)
        # Before the commit, on paho's thread: the rules see the first evidence at once.
        self.observers: list[Listener] = []
        self.committed = 0
        self.quarantined = 0

    async def start(self) -> None:
        """Bind to the running loop and load what was last known (availability)."""
        self._loop = asyncio.get_running_loop()
        await self._writer.load()

    # -- network thread ----------------------------------------------------------------------

    def on_message(self, topic: str, raw: bytes, delivery: Delivery) -> None:
        """Called by the broker link for every delivery; never raises, never blocks on I/O."""
        now, arrived = self._clock(), time.monotonic()
        try:
            message = self._decoder.decode(topic, raw, now)
        except Exception as exc:  # a decoder bug must not lose the message or stop ingest
            log.exception("decoder failed on %s", topic)
            message = Rejected(topic, raw, RejectReason.SCHEMA_MISMATCH, repr(exc), now)
        kept: Accepted | MessageRows | Rejected | None = message
        if isinstance(message, Accepted):
            for observer in self.observers:
                try:
                    observer(message)
                except Exception:  # storing the message goes on; the failure is loud
                    log.exception("rules failed on %s", topic)
            kept = _as_rows(message, topic, raw)
        with self._lock:
            self._inbox.append(Pending(kept, topic, raw, delivery, now, arrived))
            size = len(self._inbox)
            self._in_hand += 1
            self.peak_in_hand = max(self.peak_in_hand, self._in_hand)
            full = self._in_hand >= self._limit()
        if (size == 1 or size == self._batch_max) and self._loop is not None:
            self._loop.call_soon_threadsafe(self._signal, size)
        if full:
            self._wait_for_room()

    def _limit(self) -> int:
        """Messages in hand past which paho's thread waits (with the lock held)."""
        return self._ceiling if self._window_let_go else self._window

    def _wait_for_room(self) -> None:
        """Hold paho's thread, and so the broker's next delivery, while the window is full;
        at most WINDOW_WAIT_MAX_S, after which the window is let go (only the ceiling holds)
        until the writer has caught up to half of it."""
        with self._lock:
            limit = self._limit()
            if self._in_hand < limit or self._stopping:
                return
            started = time.monotonic()
            deadline = started + WINDOW_WAIT_MAX_S
            while self._in_hand >= limit and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    if not self._window_let_go:
                        self._window_let_go = True
                        log.warning(
                            "the writer took over %.2f s to make room for more messages:"
                            " reading on past the window of %d until it catches up",
                            WINDOW_WAIT_MAX_S,
                            self._window,
                        )
                    break
                self._room.wait(left)
        self._metrics.window_wait_seconds.inc(time.monotonic() - started)

    def _signal(self, size: int) -> None:
        self._arrived.set()
        if size >= self._batch_max:
            self._full.set()

    # -- writer ------------------------------------------------------------------------------

    async def run(self, link: Link) -> None:
        """Commit and ack batches until `stop()`; then commit and ack what is left."""
        while not self._stopping:
            if self._held:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), self._retry_in_s)
            else:
                await self._wait_for_batch()
            await self.flush(link)
        # What is in hand at the stop, and no more: under a flood, new arrivals would keep the
        # loop going past the 5 s a SIGTERM allows. The broker redelivers the rest.
        in_hand = self._inbox_state()[0] + len(self._held)
        while in_hand > 0:
            flushed = await self.flush(link)
            if not flushed:
                break
            in_hand -= flushed

    def stop(self) -> None:
        """Finish the batch in hand and return from `run`."""
        with self._lock:
            self._stopping = True
            self._room.notify_all()
        self._stopped.set()
        self._arrived.set()
        self._full.set()

    async def _wait_for_batch(self) -> None:
        """Return when a batch is due: `batch_max` waiting, or the oldest is `flush_interval_s`
        old. Bounded waits: a lost wake-up costs at most a second, never a stall."""
        size, oldest = self._inbox_state()
        if size == 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), 1.0)
            except TimeoutError:
                return
            size, oldest = self._inbox_state()
        linger = self._flush_interval_s - (time.monotonic() - oldest)
        if 0 < size < self._batch_max and linger > 0 and not self._stopping:
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), linger)

    @property
    def waiting(self) -> int:
        """Messages received and not yet taken into a batch."""
        return self._inbox_state()[0]

    def _inbox_state(self) -> tuple[int, float]:
        with self._lock:
            size = len(self._inbox)
            return size, self._inbox[0].arrived if size else 0.0

    async def flush(self, link: Link) -> int:
        """Commit up to `batch_max` waiting messages, then ack them and tell each device what
        of its own was refused (rejections.py); return how many.

        A message the store refuses is quarantined (`store_failed`) and the rest of its batch
        stored (salvage.py). When the database fails (locked past its busy timeout, full,
        I/O), nothing is acknowledged nor told: the batch is held, counted, and written again
        first after a wait (`run`); 0 is returned. Nothing of it is lost if the service stops
        meanwhile: the broker redelivers it."""
        pending = self._held
        if not pending:
            with self._lock:
                pending = self._inbox[: self._batch_max]
                del self._inbox[: self._batch_max]
            if not pending:
                return 0
            pending = self._writer.with_quota(pending)  # once per message, not per try
        started = time.perf_counter()
        try:
            stored, inserted = await store_by_halves(
                pending, self._writer.write, self._writer.store_failed
            )
        except _WRITE_ERRORS as exc:
            self._held = pending
            what = f"a batch of {len(pending)} messages (unacknowledged)"
            fault, self._retry_in_s = self.faults.failed(exc, what)
            self._metrics.write_failures.labels(fault.value).inc()
            return 0
        except BaseException:  # cancelled at a stop: left for redelivery
            self._held = []
            self._make_room(len(pending))
            raise
        self._held = []
        self.faults.succeeded()
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        try:
            acked = link.ack([item.delivery for item in stored])
        finally:  # settled: committed and acked (or left for redelivery by a changed link)
            self._make_room(len(pending))
        self._metrics.ack_lag_seconds.observe(max(0.0, time.monotonic() - stored[0].arrived))
        # after the commit (a refusal told is one kept) and after the acks (they wait on nothing)
        self._notices.tell(stored, link)
        self._count(stored, inserted)
        expected = sum(1 for item in stored if item.delivery.qos > 0)
        if acked < expected:
            log.info("%d committed messages left for redelivery (link changed)", expected - acked)
        self._metrics.pending.set(self._inbox_state()[0])
        return len(pending)

    def _make_room(self, settled: int) -> None:
        with self._lock:
            self._in_hand -= settled
            if self._in_hand < self._window // 2:
                self._window_let_go = False
            self._room.notify_all()

    def _count(self, items: Sequence[Pending], inserted: int) -> None:
        # Counted per kind first: one metric update per kind and batch, not per message.
        kinds: Counter[MessageKind] = Counter()
        extra: Counter[MessageKind] = Counter()
        gate_events: Counter[tuple[str, str, str]] = Counter()
        rejected: Counter[tuple[str, str]] = Counter()  # (reason, device label)
        over_quota: Counter[tuple[str, str]] = Counter()
        rows = 0  # messages that have a row of their own (a sample, an event, a quarantine)
        m = self._metrics
        for item in items:
            message = item.message
            if isinstance(message, _ROUTED):
                kind = message.route.kind
                kinds[kind] += 1
                if message.extra_fields:
                    extra[kind] += message.extra_fields
                event = message.gate_event if isinstance(message, MessageRows) else None
                if event is not None and message.route.gate is not None:
                    gate_events[(message.route.device, message.route.gate, event)] += 1
                rows += kind not in ACK_KINDS and kind not in AVAILABILITY_KINDS
            elif isinstance(message, Rejected):
                labels = (message.reason.value, m.device_label(message.device))
                rejected[labels] += 1
                if not item.kept:
                    over_quota[labels] += 1
                self._log_rejected(message)
                self.quarantined += 1
                rows += item.kept
        m.batch_size.observe(len(items))
        m.duplicates.inc(rows - inserted)
        for kind, count in kinds.items():
            m.ingested.labels(kind.value).inc(count)
        for kind, count in extra.items():
            m.unknown_fields.labels(kind.value).inc(count)
        for (garage, gate, event), count in gate_events.items():
            m.gate_events.labels(garage, gate, event).inc(count)
        for labels, count in rejected.items():
            m.rejected.labels(*labels).inc(count)
        for labels, count in over_quota.items():
            m.over_quota.labels(*labels).inc(count)
        self.committed += len(items)

    def _log_rejected(self, message: Rejected) -> None:
        """Log each quarantined message once, truncated; at most 10 a minute per reason."""
        window_start, count = self._log_budget.get(message.reason, (0.0, 0))
        now = time.monotonic()
        if now - window_start >= 60:
            if count > _LOG_PER_REASON_PER_MINUTE:
                log.warning(
                    "%d more %s messages quarantined in the last minute",
                    count - _LOG_PER_REASON_PER_MINUTE,
                    message.reason,
                )
            window_start, count = now, 0
        count += 1
        self._log_budget[message.reason] = (window_start, count)
        if count <= _LOG_PER_REASON_PER_MINUTE:
            log.warning(
                "quarantined %s on %s (%s): %r",
                message.reason,
                message.topic,
                message.detail,
                message.raw[:_LOG_PAYLOAD_CHARS],
            )
