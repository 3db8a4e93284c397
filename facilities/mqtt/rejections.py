"""Telling a device what was refused: each refusal on the device's own `…/rejected` topic."""

# docs/protocol.md, "Telling a device what was refused". Called by ingest's writer on the event
# loop, after the batch that quarantined the message was committed: never on paho's network
# thread, and never for more than the device's quarantine quota (ingest_batch.py) an hour.

import json
import logging
import math
from collections.abc import Sequence
from typing import Protocol

from pydantic import Field

from facilities.messages import Rejected, RejectReason
from facilities.metrics import IngestMetrics
from facilities.mqtt.ingest_batch import Pending
from facilities.mqtt.topics import Topics
from facilities.wire import WireModel

log = logging.getLogger(__name__)


class Rejection(WireModel):
    """What the service publishes on a device's `…/rejected` topic (QoS 1, not retained)."""

    topic: str = Field(description="the topic the refused message came on")
    seq: int | None = Field(None, description="the message's `seq`, when it could be read")
    ts: float | None = Field(None, description="the message's `ts`, when it could be read")
    reason: RejectReason = Field(description="why it was refused (docs/protocol.md)")
    detail: str = Field(description="what was wrong, e.g. `ports.3.power_w: …`")


class Publisher(Protocol):
    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
        expiry_s: float | None = None,
    ) -> None: ...


def rejection(rejected: Rejected) -> Rejection:
    """The refusal as told to the device: `seq` and `ts` when the payload yields them."""
    seq, ts = _identity(rejected)
    return Rejection(
        topic=rejected.topic,
        seq=seq,
        ts=ts,
        reason=rejected.reason,
        detail=rejected.detail,
    )


def _identity(rejected: Rejected) -> tuple[int | None, float | None]:
    """`seq` and `ts` of a refused payload, each only if it is there with a usable type: an
    integer `seq`, a finite number `ts` (a device sent them; it may be why it was refused).
    An oversized payload is not parsed at all."""
    if rejected.reason is RejectReason.TOO_LARGE:
        return None, None
    try:
        payload = json.loads(rejected.raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the stack
        return None, None
    if not isinstance(payload, dict):
        return None, None
    seq, ts = payload.get("seq"), payload.get("ts")
    # bool is an int to Python, never to the protocol
    seq_read = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    ts_read = None
    if isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts):
        ts_read = float(ts)
    return seq_read, ts_read


class RejectionNotices:
    """Publishes each committed refusal of a known device on its `…/rejected` topic."""

    def __init__(self, topics: Topics, *, metrics: IngestMetrics) -> None:
        self._topics = topics
        self._metrics = metrics

    def tell(self, items: Sequence[Pending], publisher: Publisher) -> int:
        """Tell each device the refusals of `items` (a committed batch) that are within its
        quarantine quota; return how many were published. Past the quota a refusal is only
        counted (`facilities_quarantine_over_quota_total{device}`). A refusal on a topic that
        names no device of the site file has no topic to answer on: it goes nowhere. A
        failure to publish is logged, never raised: the batch is stored and acknowledged."""
        told = 0
        for item in items:
            message = item.message
            if not isinstance(message, Rejected) or not message.device or not item.kept:
                continue
            route = self._topics.parse(message.topic)
            if route is None:  # a known device's message always came on a protocol topic
                continue
            try:
                payload = rejection(message).model_dump_json(exclude_none=True)
                publisher.publish(self._topics.rejected(route), payload)
            except Exception:  # telling the device is a courtesy; ingest goes on
                log.exception("cannot tell %s of its refused message", message.device)
                continue
            told += 1
        if told:
            self._metrics.rejections_published.inc(told)
        return told
