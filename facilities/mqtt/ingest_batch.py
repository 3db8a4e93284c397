"""One batch into SQLite: accepted messages as rows, bad ones quarantined within a quota."""

# The ingest's writer side (ingest.py receives and acknowledges): what a batch holds, which
# availability changes it records, and which bad messages get a row of their own.

import logging
from collections.abc import Sequence
from typing import NamedTuple

from facilities.messages import Accepted, MessageKind, Rejected, RejectReason
from facilities.mqtt.session import Delivery
from facilities.store.sql import Connection
from facilities.store.telemetry import (
    BatchRows,
    MessageRows,
    hour_start,
    last_availability,
    quarantined_last_hour,
    write_batch,
)
from facilities.wire import Availability

log = logging.getLogger(__name__)

_DETAIL_CHARS = 300  # as the decoder's details: the error, short enough to log
# Bad messages kept per device and hour (past it, counted only; `--quarantine-per-device-hour`,
# docs/operations.md, "Retention"): a device whose every telemetry (each 10 s) is bad fills 60
# in 10 minutes, and 60 rows of at most ~1.6 KiB (a 1 KiB prefix, a 256-character topic, a
# 300-character detail) are ~100 KiB an hour.
DEFAULT_QUARANTINE_PER_DEVICE_HOUR = 60
AVAILABILITY_KINDS = frozenset({MessageKind.STATION_AVAILABILITY, MessageKind.GARAGE_AVAILABILITY})
ACK_KINDS = frozenset({MessageKind.STATION_ACK, MessageKind.GATE_ACK})


class Pending(NamedTuple):
    """A delivery waiting for its batch's commit, then its ack (one per message on paho's
    thread: a named tuple, docs/performance.md, "Tuples on the hot path")."""

    # An accepted device message is kept as its rows once the rules have seen it (acks and
    # availability as they are); None: our own command heard back, only acked.
    message: Accepted | MessageRows | Rejected | None
    topic: str
    raw: bytes  # kept to quarantine the message if the store refuses it
    delivery: Delivery
    received_at: float  # the wall clock (Unix seconds), stored with the message
    arrived: float  # time.monotonic(): linger and ack lag, whatever the wall clock does
    kept: bool = True  # a rejection within its device's quarantine quota (a row of its own)


class BatchWriter:
    """Writes batches in one transaction each; keeps the availability last recorded and each
    device's quarantine count of the hour."""

    def __init__(self, conn: Connection, *, quarantine_quota: int) -> None:
        self._conn = conn
        self._quota = quarantine_quota
        self._availability: dict[str, str] = {}
        # device → (start of the hour, bad messages in it): the site's devices and "" only
        self._quarantined: dict[str, tuple[float, int]] = {}

    async def load(self) -> None:
        """What was last known: each device's availability, the hour's quarantine counts."""
        self._availability = await last_availability(self._conn)
        self._quarantined = await quarantined_last_hour(self._conn)

    def with_quota(self, items: Sequence[Pending]) -> list[Pending]:
        """Each rejection marked kept or not: decided once per message, before the write,
        so that a batch stored by halves keeps it."""
        return [
            item._replace(kept=self.within_quota(item.message))
            if isinstance(item.message, Rejected)
            else item
            for item in items
        ]

    async def write(self, items: Sequence[Pending]) -> int:
        """Store `items` in one transaction; return how many rows were new. On failure the
        availability known stays as it was, so that a retry records the same changes."""
        known = dict(self._availability)
        rows = BatchRows()
        for item in items:
            if isinstance(item.message, MessageRows):
                rows.add_rows(item.message)
            elif isinstance(item.message, Accepted):
                self._add(rows, item.message)
            elif isinstance(item.message, Rejected):
                if item.kept:
                    rows.add_rejected(item.message)
                else:
                    rows.add_over_quota(item.message)
        try:
            return await write_batch(self._conn, rows)
        except BaseException:
            self._availability = known
            raise

    def store_failed(self, item: Pending, exc: Exception) -> Pending:
        """A message the store refused alone: quarantined as `store_failed`."""
        # backslashreplace: the error may quote text that cannot be stored as it is
        detail = f"{type(exc).__name__}: {exc}".encode("utf-8", "backslashreplace").decode()
        message = item.message
        device = message.route.device if isinstance(message, Accepted | MessageRows) else ""
        rejected = Rejected(
            item.topic,
            item.raw,
            RejectReason.STORE_FAILED,
            detail[:_DETAIL_CHARS],
            item.received_at,
            device,
        )
        return item._replace(message=rejected, kept=self.within_quota(rejected))

    def within_quota(self, rejected: Rejected) -> bool:
        """Whether a bad message gets a quarantine row: at most `quarantine_quota` a device
        (or all unknown ones together) in each hour of the service's clock; past it, only
        counted. Told once per device and hour."""
        hour = hour_start(rejected.received_at)
        start, count = self._quarantined.get(rejected.device, (hour, 0))
        if start != hour:
            count = 0
        self._quarantined[rejected.device] = (hour, count + 1)
        if count == self._quota:
            log.warning(
                "%s passed its quarantine quota (%d bad messages this hour): the rest of the"
                " hour's are counted, not kept nor told to the device",
                rejected.device or "unknown devices",
                self._quota,
            )
        return count < self._quota

    def _add(self, rows: BatchRows, message: Accepted) -> None:
        kind = message.route.kind
        if kind in ACK_KINDS:
            return  # command acks are matched by the command sender, not stored as telemetry
        if kind in AVAILABILITY_KINDS:
            assert isinstance(message.payload, Availability)
            status = message.payload.value
            if self._availability.get(message.route.device) != status:
                self._availability[message.route.device] = status
                rows.add_availability(message)
                log.info("%s is %s", message.route.device, status)
            return
        rows.add(message)
