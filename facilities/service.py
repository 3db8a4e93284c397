"""The composition: `build` wires every part of one process once; `run` runs them.

`build` opens nothing: the store's connections, the broker link and the tasks start in `run`,
in order, and stop in the reverse order. The HTTP app (`create_app(service.http)`) reads
through the narrow `Services` it is given; nothing mutates the parts once they are built
(docs/architecture.md, "The composition").
"""

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from facilities.access import RateLimiter
from facilities.api.deps import Services
from facilities.api.errors import http_status
from facilities.api.live import QUEUE_SIZE, LiveFeed, device_bodies
from facilities.clocks import SteadyClock
from facilities.estimates import Estimates
from facilities.health import HealthCheck
from facilities.live_metrics import AlertMetrics, DeviceCollector, ServiceCollector, device_families
from facilities.messages import Accepted
from facilities.metrics import ApiMetrics, CommandMetrics, IngestMetrics
from facilities.mqtt.commands import CommandSender
from facilities.mqtt.decode import Decoder
from facilities.mqtt.ingest import Ingest
from facilities.mqtt.session import BrokerLink, BrokerUrl, session_client_id
from facilities.mqtt.topics import Topics
from facilities.refusals import Refusals
from facilities.requests import REFUSAL_ROWS_PER_MINUTE, Authenticator, Requests
from facilities.rules.engine import Engine
from facilities.rules.live_state import ChangeStream, LiveState
from facilities.rules.runner import RulesRunner
from facilities.settings import Settings
from facilities.site import Site
from facilities.startup import forget_removed_devices, load_live_state, replay_stored
from facilities.store.audit import RefusalWriter
from facilities.store.db import Store
from facilities.store.retention import Policy, Retention
from facilities.wire import CommandAck

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
            estimates=self.estimates.typical_charge,
            health=self.health,
            registry=self.metrics.registry,
            refusals=self.refusals,
            metrics=self.metrics.api,
            feed=self.feed,
            listen=self.settings.listen,
            public_url=self.settings.public_url,
        )


def build(
    settings: Settings,
    site: Site,
    *,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    live_queue: int = QUEUE_SIZE,
) -> Service:
    """Wire every part once, opening nothing. Unix seconds that never go back (what is
    recorded, and the rules' time) come from `clock`; durations (rate windows, heartbeats)
    from `monotonic`: tests move both instead of sleeping. `live_queue`: events a live-stream
    client may fall behind before it is dropped."""
    steady = SteadyClock(clock, monotonic)
    now = functools.partial(_now, steady)
    metrics, store = _metrics(), Store(settings.db)
    live = LiveState(Engine(site), clock=now, changes=ChangeStream())
    ingest, link = _broker_side(settings, site, store, steady, metrics.ingest)
    commands = CommandSender(link, store.writer, clock=steady, metrics=metrics.commands)
    # acks to the command sender that waits for them; everything else to the live state
    ingest.observers.append(functools.partial(_deliver, live, commands))
    rules = RulesRunner(live, store.writer, link, commands, clock=now, monotonic=monotonic)
    refusals = Refusals(clock=steady, metrics=metrics.api)
    estimates = Estimates(store.reader, clock=steady)
    feed = LiveFeed(
        device_bodies(site, live, estimates=estimates.typical_charge, now=now),
        queue_size=live_queue,
    )
    _watch_live(metrics, site, live, link, feed, now)
    limit = functools.partial(RateLimiter, clock=monotonic)
    requests = Requests(
        site,
        auth=Authenticator(
            store.reader, failures=limit(settings.auth_failures_per_minute), clock=steady
        ),
        commands=commands,
        live=live,
        writer=store.writer,
        reader=store.reader,
        opens=limit(settings.opens_per_minute),
        connected=lambda: link.connected,
        clock=steady,
        http_status=http_status,
        refusals=refusals,
        refusal_rows=limit(REFUSAL_ROWS_PER_MINUTE),
        metrics=metrics.api,
    )
    retention = Retention(
        store.writer,
        Policy(settings.quarantine_retention_days, settings.audit_retention_days),
        clock=steady,
        metrics=metrics.ingest,
    )
    health = HealthCheck(
        ingest=ingest, link=link, rules=rules, db=store.ingest, monotonic=monotonic
    )
    return Service(
        settings=settings,
        site=site,
        clock=steady,
        monotonic=monotonic,
        metrics=metrics,
        store=store,
        link=link,
        ingest=ingest,
        commands=commands,
        live=live,
        rules=rules,
        requests=requests,
        retention=retention,
        estimates=estimates,
        refusals=refusals,
        refusal_writer=RefusalWriter(refusals, store.writer),
        health=health,
        feed=feed,
    )


def _broker_side(
    settings: Settings, site: Site, store: Store, clock: SteadyClock, metrics: IngestMetrics
) -> tuple[Ingest, BrokerLink]:
    """Ingest, and the broker link that hands it every message."""
    topics = Topics(settings.topic_prefix)
    ingest = Ingest(
        store.ingest,
        Decoder(site, topics),
        metrics=metrics,
        clock=clock,
        quarantine_quota=settings.quarantine_per_device_hour,
    )
    url = BrokerUrl.parse(settings.broker)
    link = BrokerLink(
        url,
        client_id=session_client_id(url, settings.client_id),
        topics=topics,
        on_message=ingest.on_message,
        subscriptions=topics.subscriptions(),
    )
    return ingest, link


@contextlib.asynccontextmanager
async def run(service: Service) -> AsyncIterator[Service]:
    """Open the store, load and replay the live state, connect to the broker and run every
    task; on exit, finish the batch in hand, commit it, acknowledge it and disconnect."""
    store, link, settings = service.store, service.link, service.settings
    await store.open()
    try:
        await service.ingest.start()
        await forget_removed_devices(service.site, store.writer, service.now())
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
        log.info("connected to %s, ingesting into %s", link.url.display(), settings.db)
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


def _metrics() -> Metrics:
    registry = CollectorRegistry()
    return Metrics(
        registry, IngestMetrics(registry), CommandMetrics(registry), ApiMetrics(registry)
    )


def _watch_live(
    metrics: Metrics,
    site: Site,
    live: LiveState,
    link: BrokerLink,
    feed: LiveFeed,
    now: Callable[[], datetime],
) -> None:
    """Who hears of the live state's changes (the live stream, the alert metrics), and the
    metrics read from it and from the link at each scrape."""
    live.changes.subscribe(feed.changed)
    live.changes.subscribe(AlertMetrics(metrics.registry).changed)
    metrics.api.live_clients.set_function(lambda: feed.subscribers)

    def devices() -> list[Metric]:
        at = now()
        return live.read(lambda reading: device_families(site, reading, at))

    metrics.registry.register(DeviceCollector(devices))
    metrics.registry.register(
        ServiceCollector(
            connected=lambda: link.connected,
            reconnects=lambda: link.reconnects,
            open_alerts=lambda: [(a.rule, a.severity.value) for a in live.open_alerts()],
        )
    )


def _now(clock: SteadyClock) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


def _deliver(live: LiveState, commands: CommandSender, message: Accepted) -> None:
    """An accepted message, on paho's thread: a command's ack to the command sender that
    waits for it, anything else to the live state."""
    if isinstance(message.payload, CommandAck):
        commands.on_ack(message.route.device, message.route.gate, message.payload)
    else:
        live.observe(message)
