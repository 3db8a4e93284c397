"""Composition root: builds the service from settings and runs its tasks in one TaskGroup."""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiosqlite
from prometheus_client import CollectorRegistry

from facilities.engine import Engine
from facilities.metrics import IngestMetrics
from facilities.mqtt.commands import CommandSender
from facilities.mqtt.decode import Decoder
from facilities.mqtt.ingest import Ingest
from facilities.mqtt.session import BrokerLink, BrokerUrl
from facilities.mqtt.topics import Topics
from facilities.runtime import RulesRuntime
from facilities.settings import Settings
from facilities.site import Site
from facilities.store import rules as rules_store
from facilities.store.db import SharedWriter, open_db

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Health:
    """Whether the service can do its job now, and if not, why."""

    ok: bool
    reasons: list[str] = field(default_factory=list)


class Service:
    """Ingest, broker link and store of one process; the HTTP app reads from it."""

    def __init__(
        self, settings: Settings, site: Site, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.site = site
        self.clock = clock  # Unix seconds; tests move it instead of sleeping
        self.topics = Topics(settings.topic_prefix)
        self.registry = CollectorRegistry()
        self.ingest_metrics = IngestMetrics(self.registry)
        self.broker_url = BrokerUrl.parse(settings.broker)
        self._conn: aiosqlite.Connection | None = None
        self._link: BrokerLink | None = None
        self._ingest: Ingest | None = None
        self._rules: RulesRuntime | None = None

    @property
    def ingest(self) -> Ingest:
        if self._ingest is None:
            raise RuntimeError("the service is not running")
        return self._ingest

    @property
    def rules(self) -> RulesRuntime:
        if self._rules is None:
            raise RuntimeError("the service is not running")
        return self._rules

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
        self._conn = conn
        try:
            ingest = Ingest(
                conn,
                Decoder(self.site, self.topics),
                metrics=self.ingest_metrics,
                clock=self.clock,
            )
            await ingest.start()
            link = BrokerLink(
                self.broker_url,
                client_id=self.settings.client_id,
                topics=self.topics,
                on_message=ingest.on_message,
                subscriptions=self.topics.subscriptions(),
            )
            stations, garages = await rules_store.load_live_state(rules_conn)
            engine = Engine(
                self.site,
                stations=stations,
                garages=garages,
                alerts=await rules_store.load_open_alerts(rules_conn),
            )
            rules_db = SharedWriter(rules_conn)
            commands = CommandSender(link, rules_db, clock=self.clock)
            rules = RulesRuntime(engine, rules_db, link, commands, clock=self.now)
            ingest.observers.append(rules.observe)
            self._ingest, self._link, self._rules = ingest, link, rules
            await link.connect(timeout_s=self.settings.connect_timeout_s)
            log.info("connected to %s, ingesting into %s", link.url.display(), self.settings.db)
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(link.run(), name="broker-link")
                    writer = tasks.create_task(ingest.run(link), name="ingest-writer")
                    rules_task = tasks.create_task(rules.run(), name="rules")
                    try:
                        yield self
                    finally:
                        ingest.stop()
                        await asyncio.wait_for(asyncio.shield(writer), 3.0)
                        rules_task.cancel()  # saves the live state on its way out
                        await link.close()
            finally:
                await link.close()  # idempotent: also when the task group failed
        finally:
            self._ingest = self._link = self._conn = self._rules = None
            await rules_conn.close()
            await conn.close()

    async def health(self) -> Health:
        """503 material for /healthz: broker link and database, each with its reason."""
        reasons = []
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
                    await conn.execute("SELECT 1")
            except (TimeoutError, aiosqlite.Error) as exc:
                reasons.append(f"database not answering ({exc or 'timeout'})")
        return Health(ok=not reasons, reasons=reasons)
