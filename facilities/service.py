"""Composition root: builds the service from settings and runs its tasks in one TaskGroup."""

import asyncio
import contextlib
import functools
import logging
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiosqlite
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from facilities.access import RateLimiter
from facilities.api.errors import http_status
from facilities.clocks import SteadyClock
from facilities.live_metrics import (
    AlertMetrics,
    DeviceCollector,
    ServiceCollector,
    device_families,
)
from facilities.messages import Accepted
from facilities.metrics import ApiMetrics, CommandMetrics, IngestMetrics
from facilities.mqtt.commands import CommandSender
from facilities.mqtt.decode import Decoder
from facilities.mqtt.ingest import Ingest
from facilities.mqtt.session import BrokerLink, BrokerUrl, session_client_id
from facilities.mqtt.topics import Topics
from facilities.refusals import Refusals
from facilities.requests import REFUSAL_ROWS_PER_MINUTE, Authenticator, Requests
from facilities.rules.engine import Engine, in_site
from facilities.rules.live_state import ChangeStream, LiveState
from facilities.rules.runner import RulesRunner
from facilities.settings import Settings
from facilities.site import Site
from facilities.store import alerts as alert_store
from facilities.store import audit, history, replay, snapshots
from facilities.store.db import SharedWriter, open_db, ping
from facilities.store.retention import Policy, Retention
from facilities.wire import CommandAck

log = logging.getLogger(__name__)

# Free-time estimates of charging ports: the median length of the station's sessions that
# ended full or unplugged in the last 30 days, once it has this many; the site's median
# before that; DEFAULT_CHARGE until the site has any. 3 h: a 48 V 20 Ah e-bike battery from
# half charge on a typical 2-3 A charger. Recomputed every ESTIMATES_EVERY_S.
ESTIMATE_MIN_SESSIONS = 5
ESTIMATE_HISTORY_S = 30 * 24 * 3600
DEFAULT_CHARGE = timedelta(hours=3)
ESTIMATES_EVERY_S = 300.0
# /healthz: the ingest writer is stuck when messages have waited this long with no commit:
# 60 times its 50 ms flush interval, and under the database's 5 s busy timeout. Its progress
# is sampled this often.
INGEST_STUCK_S = 3.0
INGEST_WATCH_EVERY_S = 0.5
# At start, for a snapshot that does not say what it counted last (an older version's, or a
# device new since the last snapshot), what was stored from this long before it is replayed:
# a message is counted within milliseconds of its receive time, 10 s covers a network thread
# held up under load; the saved marks keep most of the overlap from counting twice.
REPLAY_OVERLAP_S = 10.0
# Refusals of requests without a valid token are written this often, in one transaction
# (docs/api.md, "Refusals"): a flood costs a few rows every few seconds, never a commit each.
REFUSALS_EVERY_S = 5.0


@dataclass(slots=True)
class Health:
    """Whether the service can do its job now, and if not, why."""

    ok: bool
    reasons: list[str] = field(default_factory=list)


class Service:
    """Ingest, broker link and store of one process; the HTTP app reads from it."""

    def __init__(
        self,
        settings: Settings,
        site: Site,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.site = site
        # Unix seconds that never go back (what is recorded, and the rules' time); durations
        # (rate windows, health heartbeats) on `monotonic`. Tests move both instead of sleeping.
        self.clock = SteadyClock(clock, monotonic)
        self.monotonic = monotonic
        self.topics = Topics(settings.topic_prefix)
        self.registry = CollectorRegistry()
        self.ingest_metrics = IngestMetrics(self.registry)
        self.command_metrics = CommandMetrics(self.registry)
        self.api_metrics = ApiMetrics(self.registry)
        self.refusals = Refusals(clock=self.clock, metrics=self.api_metrics)
        self._refusals_db: SharedWriter | None = None
        self.broker_url = BrokerUrl.parse(settings.broker)
        self._conn: aiosqlite.Connection | None = None
        self._link: BrokerLink | None = None
        self._ingest: Ingest | None = None
        self._rules: RulesRunner | None = None
        self._reader: aiosqlite.Connection | None = None
        self._requests: Requests | None = None
        self._retention: Retention | None = None
        self._live: LiveState | None = None
        # what changed in the live state, from every start: the live stream and the metrics
        self.changes = ChangeStream()
        self._typical_charge: dict[str, timedelta] = {}
        # the ingest writer's heartbeat: when it last had nothing waiting or committed more
        self._ingest_beat = (monotonic(), 0)
        self.changes.subscribe(AlertMetrics(self.registry).changed)
        self.registry.register(DeviceCollector(self._device_metrics))
        self.registry.register(
            ServiceCollector(
                connected=lambda: self._link is not None and self._link.connected,
                reconnects=lambda: self._link.reconnects if self._link else 0,
                open_alerts=self._open_alerts,
            )
        )

    @property
    def ingest(self) -> Ingest:
        if self._ingest is None:
            raise RuntimeError("the service is not running")
        return self._ingest

    @property
    def rules(self) -> RulesRunner:
        if self._rules is None:
            raise RuntimeError("the service is not running")
        return self._rules

    @property
    def live(self) -> LiveState:
        """The live state: stations, garages, open alerts, desired state."""
        if self._live is None:
            raise RuntimeError("the service is not running")
        return self._live

    @property
    def requests(self) -> Requests:
        if self._requests is None:
            raise RuntimeError("the service is not running")
        return self._requests

    @property
    def retention(self) -> Retention:
        """Deletes quarantine and request audit rows past their retention."""
        if self._retention is None:
            raise RuntimeError("the service is not running")
        return self._retention

    @property
    def reader(self) -> aiosqlite.Connection:
        """The HTTP API's connection: reads only (WAL lets it read while ingest writes)."""
        if self._reader is None:
            raise RuntimeError("the service is not running")
        return self._reader

    def _device_metrics(self) -> list[Metric]:
        live, now = self._live, self.now()
        if live is None:
            return []
        return live.read(lambda reading: device_families(self.site, reading, now))

    def _open_alerts(self) -> list[tuple[str, str]]:
        live = self._live
        if live is None:
            return []
        return [(a.rule, a.severity.value) for a in live.open_alerts()]

    def typical_charge(self, station: str) -> timedelta:
        return self._typical_charge.get(station) or self._typical_charge.get("", DEFAULT_CHARGE)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    @property
    def link(self) -> BrokerLink:
        if self._link is None:
            raise RuntimeError("the service is not running")
        return self._link

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["Service"]:
        """Open the store, connect to the broker, run ingest; on exit, finish the batch in
        hand, commit it, acknowledge it and disconnect."""
        conn = await open_db(self.settings.db)
        rules_conn = await open_db(self.settings.db)  # its own writer: never inside a batch
        self._reader = await open_db(self.settings.db)
        self._conn = conn
        try:
            ingest = Ingest(
                conn,
                Decoder(self.site, self.topics),
                metrics=self.ingest_metrics,
                clock=self.clock,
                quarantine_quota=self.settings.quarantine_per_device_hour,
            )
            await ingest.start()
            link = BrokerLink(
                self.broker_url,
                client_id=session_client_id(self.broker_url, self.settings.client_id),
                topics=self.topics,
                on_message=ingest.on_message,
                subscriptions=self.topics.subscriptions(),
            )
            rules_db = SharedWriter(rules_conn)
            await self._forget_removed_devices(rules_db)
            commands = CommandSender(link, rules_db, clock=self.clock, metrics=self.command_metrics)
            live, saved = await self._load_live_state(rules_conn)
            rules = RulesRunner(
                live, rules_db, link, commands, clock=self.now, monotonic=self.monotonic
            )
            await self._replay(live, rules, rules_conn, saved)
            # acks to the command sender that waits for them; everything else to the live state
            ingest.observers.append(functools.partial(_deliver, live, commands))
            self._requests = self._build_requests(
                live, commands, writer=rules_db, reader=self._reader, link=link
            )
            self._retention = retention = Retention(
                rules_db,
                Policy(
                    quarantine_days=self.settings.quarantine_retention_days,
                    audit_days=self.settings.audit_retention_days,
                ),
                clock=self.clock,
                metrics=self.ingest_metrics,
            )
            await self._estimate()
            self._ingest, self._link, self._rules, self._live = ingest, link, rules, live
            await link.connect(timeout_s=self.settings.connect_timeout_s)
            log.info("connected to %s, ingesting into %s", link.url.display(), self.settings.db)
            self._refusals_db = rules_db
            try:
                async with self._tasks(ingest, link, rules, retention):
                    yield self
            finally:
                await link.close()  # idempotent: also when the task group failed
        finally:
            self._ingest = self._link = self._conn = self._rules = self._requests = None
            self._live = None
            self._retention = None
            self._refusals_db = None
            reader, self._reader = self._reader, None
            await reader.close()
            await rules_conn.close()
            await conn.close()

    @contextlib.asynccontextmanager
    async def _tasks(
        self, ingest: Ingest, link: BrokerLink, rules: RulesRunner, retention: Retention
    ) -> AsyncIterator[None]:
        """Every task of the service in one TaskGroup; on exit, stopped in order: the last
        refusals stored, the batch in hand committed and acknowledged, the live state saved,
        the link closed."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(link.run(), name="broker-link")
            writer = tasks.create_task(ingest.run(link), name="ingest-writer")
            rules_task = tasks.create_task(rules.run(), name="rules")
            estimates = tasks.create_task(self._estimates(), name="estimates")
            watch = tasks.create_task(self._watch_ingest(), name="ingest-watch")
            sweeps = tasks.create_task(retention.run(), name="retention")
            refusals = tasks.create_task(self._write_refusals(), name="refusals-writer")
            try:
                yield
            finally:
                refusals.cancel()
                await self.store_refusals()  # the last ones, before the stop
                ingest.stop()
                await asyncio.wait_for(asyncio.shield(writer), 3.0)
                rules_task.cancel()  # saves the live state on its way out
                estimates.cancel()
                watch.cancel()
                sweeps.cancel()
                await link.close()

    async def _load_live_state(
        self, conn: aiosqlite.Connection
    ) -> tuple[LiveState, snapshots.Saved]:
        """The live state from the last snapshot, its open alerts and desired state."""
        saved = await snapshots.load_live_state(conn)
        engine = Engine(
            self.site,
            stations=saved.stations,
            garages=saved.garages,
            alerts=await alert_store.load_open_alerts(conn),
            desired=await snapshots.load_cutoffs(conn),
        )
        return LiveState(engine, clock=self.now, changes=self.changes), saved

    def _build_requests(
        self,
        live: LiveState,
        commands: CommandSender,
        *,
        writer: SharedWriter,
        reader: aiosqlite.Connection,
        link: BrokerLink,
    ) -> Requests:
        """What people ask of the service, with its limits from the settings."""
        limit = functools.partial(RateLimiter, clock=self.monotonic)
        return Requests(
            self.site,
            auth=Authenticator(
                reader,
                failures=limit(self.settings.auth_failures_per_minute),
                clock=self.clock,
            ),
            commands=commands,
            live=live,
            writer=writer,
            reader=reader,
            opens=limit(self.settings.opens_per_minute),
            connected=lambda: link.connected,
            clock=self.clock,
            http_status=http_status,
            refusals=self.refusals,
            refusal_rows=limit(REFUSAL_ROWS_PER_MINUTE),
            metrics=self.api_metrics,
        )

    async def _replay(
        self,
        live: LiveState,
        rules: RulesRunner,
        conn: aiosqlite.Connection,
        saved: snapshots.Saved,
    ) -> None:
        """Rebuild the live state: the last snapshot, then what was stored after it (before
        ingest starts), counting nothing twice (docs/architecture.md, "Start-up")."""
        started = self.monotonic()
        live.restore_marks(saved.marks, saved.counted_until)
        latest = max(saved.saved_at.values(), default=0.0)
        since = {}
        for device in (*self.site.stations, *self.site.garages):
            until = saved.counted_until.get(device)
            # a snapshot of an older version, or a device new since: from just before it
            fallback = saved.saved_at.get(device, latest) - REPLAY_OVERLAP_S
            since[device] = until if until is not None else fallback
        stored = await replay.stored_since(conn, since, garages=self.site.garages)
        counted = live.replay(stored)
        if counted:  # saved at once: a crash loop does not replay more at each start
            await rules.save_state()
        log.info(
            "live state: %d messages stored after the last snapshot replayed in %.2f s",
            counted,
            self.monotonic() - started,
        )

    async def _forget_removed_devices(self, writer: SharedWriter) -> None:
        """Devices (or their ports, gates) removed from the site file: close their open
        alerts and drop their saved state, each device logged once (docs/operations.md,
        "Removing a device")."""
        devices = {*self.site.stations, *self.site.garages}
        async with writer.transaction() as conn:
            forgotten = await alert_store.forget_removed(
                conn,
                devices=devices,
                in_site=functools.partial(in_site, self.site),
                now=self.now(),
            )
        for device, alerts in sorted(forgotten.items()):
            if device in devices:
                log.warning(
                    "%s has ports or gates no longer in the site file: %d open alerts cleared",
                    device,
                    alerts,
                )
            else:
                log.warning(
                    "%s is no longer in the site file: %d open alerts cleared, saved state dropped",
                    device,
                    alerts,
                )

    async def _watch_ingest(self) -> None:
        while True:
            self._ingest_progress()
            await asyncio.sleep(INGEST_WATCH_EVERY_S)

    def _ingest_progress(self) -> float:
        """Seconds the ingest writer has had messages waiting without committing any."""
        ingest, now = self._ingest, self.monotonic()
        if ingest is None:
            return 0.0
        since, committed = self._ingest_beat
        if ingest.waiting == 0 or ingest.committed != committed:
            self._ingest_beat = (now, ingest.committed)
            return 0.0
        return now - since

    async def _write_refusals(self) -> None:
        while True:
            await asyncio.sleep(REFUSALS_EVERY_S)
            await self.store_refusals()

    async def store_refusals(self) -> None:
        """Write the refusals counted since the last write, in one transaction."""
        writer, refused = self._refusals_db, self.refusals.take()
        if writer is not None and refused:
            async with writer.transaction() as conn:
                await audit.record_refusals(conn, refused)

    async def _estimates(self) -> None:
        while True:
            await asyncio.sleep(ESTIMATES_EVERY_S)
            await self._estimate()

    async def _estimate(self) -> None:
        since = self.clock() - ESTIMATE_HISTORY_S
        durations = await history.charge_durations(self.reader, since=since)
        typical = {
            station: timedelta(seconds=statistics.median(seconds))
            for station, seconds in durations.items()
            if len(seconds) >= ESTIMATE_MIN_SESSIONS
        }
        everything = [s for seconds in durations.values() for s in seconds]
        if len(everything) >= ESTIMATE_MIN_SESSIONS:
            typical[""] = timedelta(seconds=statistics.median(everything))
        self._typical_charge = typical

    async def health(self) -> Health:
        """503 material for /healthz, each with its reason: broker link, database, the rules'
        tick and writer, the ingest writer (docs/operations.md, "Health")."""
        reasons = []
        # the heartbeats first, before any await: what they say is about now
        rules = self._rules
        reasons += rules.stalls() if rules is not None else []
        stuck_s = self._ingest_progress()
        if stuck_s > INGEST_STUCK_S:
            reasons.append(f"ingest writer stuck ({stuck_s:.0f} s with messages waiting)")
        link, conn = self._link, self._conn
        if link is None or not link.connected:
            detail = link.last_error if link else "not started"
            reasons.append(f"broker link down ({detail})")
        elif not link.subscribed:
            reasons.append("not subscribed to the broker yet")
        if conn is None:
            reasons.append("database not open")
        else:
            try:
                async with asyncio.timeout(1.0):
                    await ping(conn)
            except (TimeoutError, aiosqlite.Error) as exc:
                reasons.append(f"database not answering ({exc or 'timeout'})")
        return Health(ok=not reasons, reasons=reasons)


def _deliver(live: LiveState, commands: CommandSender, message: Accepted) -> None:
    """An accepted message, on paho's thread: a command's ack to the command sender that
    waits for it, anything else to the live state."""
    if isinstance(message.payload, CommandAck):
        commands.on_ack(message.route.device, message.route.gate, message.payload)
    else:
        live.observe(message)
