"""A service: every part of one process, as `build` (facilities/wiring.py) wired them once,
and `run`, which opens the store, loads the live state, connects and owns the task group,
stopping it in order (docs/architecture.md, "The composition")."""

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from facilities.api.deps import Services
from facilities.api.live import LiveFeed
from facilities.clocks import SteadyClock
from facilities.estimates import Estimates
from facilities.health import HealthCheck
from facilities.metrics import ApiMetrics, CommandMetrics, IngestMetrics
from facilities.mqtt.commands import CommandSender
from facilities.mqtt.ingest import Ingest
from facilities.mqtt.session import BrokerLink
from facilities.owners import Owners
from facilities.refusals import Refusals
from facilities.requests import Requests
from facilities.rules.live_copies import LiveCopies
from facilities.rules.live_state import LiveState
from facilities.rules.runner import RulesRunner
from facilities.settings import Settings
from facilities.site import Site
from facilities.startup import forget_removed_devices, load_live_state, replay_stored
from facilities.store import partitions
from facilities.store.audit import RefusalWriter
from facilities.store.db import Store
from facilities.store.retention import Retention
from facilities.store.sql import shown

log = logging.getLogger(__name__)

# At a stop, the ingest writer gets this long to commit and acknowledge the batch in hand.
INGEST_STOP_S = 3.0


@dataclass(frozen=True, slots=True)
class Metrics:
    """The service's own metrics, in its registry (docs/observability.md)."""

    registry: CollectorRegistry
    ingest: IngestMetrics
    commands: CommandMetrics
    api: ApiMetrics


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """Every part of one process, wired once by `build`. Data flows one way: the broker link
    hands messages to ingest, which stores them and passes each accepted one on (an ack to the
    command sender, anything else to the live state); the rules runner acts on what the live
    state says; requests and the HTTP app read the live state and the store."""

    settings: Settings
    site: Site
    clock: SteadyClock
    monotonic: Callable[[], float]
    metrics: Metrics
    store: Store
    link: BrokerLink
    ingest: Ingest
    commands: CommandSender
    live: LiveState
    rules: RulesRunner
    requests: Requests
    retention: Retention
    estimates: Estimates
    refusals: Refusals
    refusal_writer: RefusalWriter
    health: HealthCheck
    feed: LiveFeed
    copies: LiveCopies | None = None  # with --partition: the instances' live copies
    owners: Owners | None = None  # with --partition: requests for the others' devices

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    @property
    def http(self) -> Services:
        """What the HTTP app reads."""
        return Services(
            site=self.site,
            live=self.live,
            requests=self.requests,
            history=self.store.reader,
            now=self.now,
            estimates=self.estimates.typical,
            health=self.health,
            registry=self.metrics.registry,
            refusals=self.refusals,
            metrics=self.metrics.api,
            feed=self.feed,
            listen=self.settings.listen,
            public_url=self.settings.public_url,
            cors_origins=self.settings.cors_origins,
        )


@contextlib.asynccontextmanager
async def run(service: Service) -> AsyncIterator[Service]:
    """Open the store, load and replay the live state, connect to the broker and run every
    task; on exit, finish the batch in hand, commit it, acknowledge it and disconnect."""
    store, link, settings = service.store, service.link, service.settings
    await store.open()
    try:
        if store.writer.postgres:  # today's telemetry partitions, before anything is written
            await partitions.make_days(store.writer, service.clock())
        await service.ingest.start()
        partition = settings.partition
        await forget_removed_devices(
            service.site,
            store.writer,
            service.now(),
            mine=None if partition is None else functools.partial(partition.owns, service.site),
        )
        saved = await load_live_state(service.live, store.writer.conn)
        await replay_stored(
            service.live,
            service.rules,
            store.writer.conn,
            saved,
            monotonic=service.monotonic,
        )
        await service.estimates.refresh()
        await link.connect(timeout_s=settings.connect_timeout_s)
        log.info("connected to %s, ingesting into %s", link.url.display(), shown(settings.db))
        try:
            async with _tasks(service):
                yield service
        finally:
            await link.close()  # idempotent: also when the task group failed
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _tasks(service: Service) -> AsyncIterator[None]:
    """Every task of the service in one TaskGroup; on exit, stopped in order: the last
    refusals stored, the batch in hand committed and acknowledged, the live state saved,
    the link closed."""
    ingest = service.ingest
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(service.link.run(), name="broker-link")
        writer = tasks.create_task(ingest.run(service.link), name="ingest-writer")
        rest = [
            tasks.create_task(service.rules.run(), name="rules"),
            tasks.create_task(service.estimates.run(), name="estimates"),
            tasks.create_task(service.health.watch(), name="ingest-watch"),
            tasks.create_task(service.retention.run(), name="retention"),
        ]
        if service.copies is not None:
            rest.append(tasks.create_task(service.copies.run(service.link), name="live-copies"))
        if service.owners is not None:
            rest.append(tasks.create_task(service.owners.run(service.link), name="owners"))
        refusals = tasks.create_task(service.refusal_writer.run(), name="refusals-writer")
        try:
            yield
        finally:
            refusals.cancel()
            await service.refusal_writer.store()  # the last ones, before the stop
            ingest.stop()
            await asyncio.wait_for(asyncio.shield(writer), INGEST_STOP_S)
            for task in rest:
                task.cancel()  # the rules save the live state on their way out
            await service.link.close()
