"""Retention: rows that clients and devices add are deleted after a while, in short batches."""

# Only what others make the service store: bad messages (quarantine and its over-quota
# counts) and the API's request audit (api_requests, and auth_refusals: the per-minute counts of
# requests refused for want of a token). Telemetry, alerts and commands are the
# district's history and are kept (docs/operations.md, "Retention").

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from facilities.metrics import IngestMetrics
from facilities.store.db import SharedWriter

log = logging.getLogger(__name__)

DAY_S = 86400.0
# Rows deleted per transaction: at most 11 ms each here (43 batches for 10,000 old rows of
# each table, tests/security/test_quarantine_bounds.py), so the write lock is never held long.
BATCH_ROWS = 500
# Pause between two batches: the ingest writer's flush interval (50 ms), so that a waiting
# batch of messages is committed between two of ours rather than after the whole backlog.
PAUSE_S = 0.05
# A sweep this often: rows are at most this much past their retention when deleted.
EVERY_S = 600.0


@dataclass(frozen=True, slots=True)
class Policy:
    """How long each kind of row is kept, in days."""

    quarantine_days: float
    audit_days: float

    def cutoffs(self, now: float) -> dict[str, tuple[str, float]]:
        """Table → (its time column, delete rows older than this)."""
        quarantine = now - self.quarantine_days * DAY_S
        audit = now - self.audit_days * DAY_S
        return {
            "api_requests": ("at", audit),
            "auth_refusals": ("minute", audit),
            "quarantine": ("received_at", quarantine),
            "quarantine_over_quota": ("hour_start", quarantine),
        }


@dataclass(slots=True)
class Swept:
    """What one sweep deleted (tables with none left out), in how many batches."""

    deleted: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    batch_rows: int = BATCH_ROWS
    longest_batch_s: float = 0.0


class Retention:
    """Deletes rows past their retention through the rules' writer, a short transaction at a
    time; the time comes from `clock` (Unix seconds), so tests move it instead of waiting."""

    def __init__(
        self,
        writer: SharedWriter,
        policy: Policy,
        *,
        clock: Callable[[], float],
        metrics: IngestMetrics,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self._writer = writer
        self.policy = policy
        self._clock = clock
        self._metrics = metrics
        self._batch_rows = batch_rows

    async def run(self) -> None:
        """Sweep at start and then every EVERY_S, until cancelled."""
        while True:
            await self.sweep()
            await asyncio.sleep(EVERY_S)

    async def sweep(self) -> Swept:
        """Delete every row past its retention now, in batches of `batch_rows`."""
        swept = Swept(batch_rows=self._batch_rows)
        for table, (column, before) in self.policy.cutoffs(self._clock()).items():
            # table and column names come from Policy, never from input
            sql = (
                f"DELETE FROM {table} WHERE rowid IN"  # noqa: S608
                f" (SELECT rowid FROM {table} WHERE {column} < ? LIMIT ?)"
            )
            while True:
                started = time.perf_counter()
                async with self._writer.transaction() as conn:
                    cursor = await conn.execute(sql, (before, self._batch_rows))
                    deleted = cursor.rowcount
                swept.longest_batch_s = max(swept.longest_batch_s, time.perf_counter() - started)
                swept.batches += 1
                if deleted > 0:
                    swept.deleted[table] = swept.deleted.get(table, 0) + deleted
                    self._metrics.retention_deleted.labels(table).inc(deleted)
                if deleted < self._batch_rows:
                    break
                await asyncio.sleep(PAUSE_S)
        if swept.deleted:
            log.debug("retention: deleted %s in %d batches", swept.deleted, swept.batches)
        return swept
