"""`build`: every part of one process made and wired once, opening nothing; `run`
(facilities/service.py) opens and runs them (docs/architecture.md, "The composition")."""

import functools
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Info
from prometheus_client.core import Metric

from facilities.access import RateLimiter
from facilities.api.errors import http_status
from facilities.api.live import QUEUE_SIZE, LiveFeed, device_bodies
from facilities.auth import Authenticator
from facilities.clocks import SteadyClock
from facilities.estimates import Estimates
from facilities.health import HealthCheck
from facilities.live_metrics import AlertMetrics, DeviceCollector, ServiceCollector, device_families
from facilities.messages import Accepted
from facilities.metrics import ApiMetrics, CommandMetrics, IngestMetrics
from facilities.mqtt.commands import CommandSender
from facilities.mqtt.decode import Decoder
from facilities.mqtt.ingest import Ingest
from facilities.mqtt.session import BrokerLink, BrokerUrl, MessageHandler, session_client_id
from facilities.mqtt.topics import Topics
from facilities.owners import Owners
from facilities.partition import Partition, unit_of
from facilities.refusals import Refusals
from facilities.request_audit import REFUSAL_ROWS_PER_MINUTE, RequestAudit
from facilities.requests import Requests
from facilities.rules.copies import Copies
from facilities.rules.engine import Engine
from facilities.rules.live_copies import LiveCopies
from facilities.rules.live_state import ChangeStream, LiveState
from facilities.rules.runner import RulesRunner
from facilities.service import Metrics, Service
from facilities.settings import Settings
from facilities.site import Site
from facilities.store.audit import RefusalWriter
from facilities.store.db import Store
from facilities.store.retention import Policy, Retention
from facilities.wire import CommandAck


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
    partition = settings.partition
    # with --partition, the rules know only the devices this instance owns; the others are
    # copies (docs/scaling.md, "Several instances")
    mine = partition.owned(site) if partition else site
    others = Copies(partition.owned(site, mine=False)) if partition else None
    core = _Core(
        settings,
        site,
        steady,
        now,
        monotonic,
        _metrics(site, partition),
        Store(settings.db),
        LiveState(Engine(mine), clock=now, changes=ChangeStream(), copies=others),
    )
    store, live = core.store, core.live
    owned = (*mine.stations, *mine.garages) if partition else None
    copies = owners = None
    if partition is not None and owned is not None:
        copies = LiveCopies(
            live,
            _topics(settings),
            partition=partition,
            site=site,
            owned=owned,
            monotonic=monotonic,
        )
        live.changes.subscribe(copies.changed)
        owners = Owners(_topics(settings), partition, running=copies.running)
    ingest, link = _broker_side(core, copies, owners)
    commands = CommandSender(link, store.writer, clock=steady, metrics=core.metrics.commands)
    # acks to the command sender that waits for them; everything else to the live state
    ingest.observers.append(functools.partial(_deliver, live, commands))
    if copies is not None:
        ingest.observers.append(copies.touched)
    rules = RulesRunner(
        live, store.writer, link, commands, clock=now, monotonic=monotonic, owned=owned
    )
    refusals = Refusals(clock=steady, metrics=core.metrics.api)
    estimates = Estimates(store.reader, clock=steady)
    feed = _live_feed(core, link, estimates, live_queue)
    audit = RequestAudit(
        store.writer,
        clock=core.clock,
        http_status=http_status,
        refusals=refusals,
        refusal_rows=RateLimiter(REFUSAL_ROWS_PER_MINUTE, clock=core.monotonic),
        metrics=core.metrics.api,
    )
    requests = _requests(core, commands, link, audit, owners)
    if owners is not None:
        owners.serve = requests.carry_out
    return Service(
        settings=settings,
        site=site,
        clock=steady,
        monotonic=monotonic,
        metrics=core.metrics,
        store=store,
        link=link,
        ingest=ingest,
        commands=commands,
        live=live,
        rules=rules,
        requests=requests,
        retention=_retention(core, owned),
        estimates=estimates,
        refusals=refusals,
        refusal_writer=RefusalWriter(refusals, store.writer, requests=audit.take_unwritten),
        health=HealthCheck(
            ingest=ingest, link=link, rules=rules, db=store.ingest, monotonic=monotonic
        ),
        feed=feed,
        copies=copies,
        owners=owners,
    )


@dataclass(frozen=True, slots=True)
class _Core:
    """What every other part is built on."""

    settings: Settings
    site: Site
    clock: SteadyClock
    now: Callable[[], datetime]
    monotonic: Callable[[], float]
    metrics: Metrics
    store: Store
    live: LiveState


def _topics(settings: Settings) -> Topics:
    partition = settings.partition
    return Topics(settings.topic_prefix, partition=partition.slug if partition else "")


def _broker_side(
    core: _Core, copies: LiveCopies | None, owners: Owners | None
) -> tuple[Ingest, BrokerLink]:
    """Ingest, and the broker link that hands it every message (with `--partition`, those of
    the devices this instance owns; the other instances' copies to `copies`, their requests
    and answers to `owners`)."""
    settings, partition = core.settings, core.settings.partition
    topics = _topics(settings)
    ingest = Ingest(
        core.store.ingest,
        Decoder(core.site, topics),
        metrics=core.metrics.ingest,
        clock=core.clock,
        quarantine_quota=settings.quarantine_per_device_hour,
    )
    url = BrokerUrl.parse(settings.broker, ca_file=settings.broker_ca)
    client_id = session_client_id(url, settings.client_id)
    if partition is None or copies is None or owners is None:
        link = BrokerLink(
            url,
            client_id=client_id,
            topics=topics,
            on_message=ingest.on_message,
            subscriptions=topics.subscriptions(),
        )
        return ingest, link
    mine = core.live.site  # the engine's: the devices this instance owns
    link = BrokerLink(
        url,
        # a session per partition, which its standby resumes (the shipped mosquitto.conf
        # takes the user name instead: a broker user per partition, docs/scaling.md)
        client_id=client_id if settings.client_id else f"{client_id}-{partition.slug}",
        topics=topics,
        on_message=functools.partial(
            _route,
            f"{settings.topic_prefix}/service/",
            functools.partial(_service, owners, copies),
            ingest.on_message,
        ),
        subscriptions=topics.device_subscriptions(mine.stations, mine.garages),
        copies=[topics.live_copies(), topics.partition_statuses(), *owners.subscriptions],
    )
    return ingest, link


def _route(
    service: str, copies: MessageHandler, ingest: MessageHandler, topic: str, *rest: Any
) -> None:
    """A message of the partitioned link: the other instances' copies (under the service's
    own topics) to `copies`, everything else (device topics) to ingest."""
    if topic.startswith(service):
        copies(topic, *rest)
    else:
        ingest(topic, *rest)


def _service(owners: Owners, copies: LiveCopies, topic: str, *rest: Any) -> None:
    """A message under the service's own topics: a request or an answer between the
    instances to `owners`, a copy or a partition's status to `copies`."""
    if not owners.on_message(topic, *rest):
        copies.on_message(topic, *rest)


def _requests(
    core: _Core,
    commands: CommandSender,
    link: BrokerLink,
    audit: RequestAudit,
    owners: Owners | None,
) -> Requests:
    """What people ask of the service, with its limits from the settings."""
    settings, store = core.settings, core.store
    limit = functools.partial(RateLimiter, clock=core.monotonic)
    return Requests(
        core.site,
        auth=Authenticator(
            store.reader, failures=limit(settings.auth_failures_per_minute), clock=core.clock
        ),
        commands=commands,
        live=core.live,
        writer=store.writer,
        reader=store.reader,
        opens=limit(settings.opens_per_minute),
        connected=lambda: link.connected,
        clock=core.clock,
        audit=audit,
        elsewhere=functools.partial(_elsewhere, settings.partition, core.site),
        owners=owners,
    )


def _retention(core: _Core, owned: Collection[str] | None) -> Retention:
    settings = core.settings
    return Retention(
        core.store.writer,
        Policy(
            quarantine_days=settings.quarantine_retention_days,
            audit_days=settings.audit_retention_days,
            telemetry_days=settings.telemetry_retention_days,
            bucket_days=settings.bucket_retention_days,
            event_days=settings.event_retention_days,
        ),
        clock=core.clock,
        metrics=core.metrics.ingest,
        devices=None if owned is None else frozenset(owned),
    )


def _metrics(site: Site, partition: Partition | None) -> Metrics:
    registry = CollectorRegistry()
    # the site's devices: the only `device` labels of refusals (bounded: docs/observability.md)
    devices = (*site.stations, *site.garages)
    if partition is not None:
        Info("facilities_partition", "The partition this instance owns", registry=registry).info(
            {"partition": str(partition)}
        )
    return Metrics(
        registry,
        IngestMetrics(registry, devices=devices),
        CommandMetrics(registry),
        ApiMetrics(registry),
    )


def _live_feed(core: _Core, link: BrokerLink, estimates: Estimates, queue: int) -> LiveFeed:
    """The live stream's feed, and who else hears of the live state's changes (the alert
    metrics); the metrics read from the live state and from the link at each scrape."""
    live, metrics = core.live, core.metrics
    feed = LiveFeed(
        device_bodies(core.site, live, estimates=estimates.typical, now=core.now),
        queue_size=queue,
    )
    live.changes.subscribe(feed.changed)
    live.changes.subscribe(AlertMetrics(metrics.registry).changed)
    metrics.api.live_clients.set_function(lambda: feed.subscribers)

    def devices() -> list[Metric]:
        at = core.now()
        return live.read(lambda reading: device_families(core.site, reading, at))

    metrics.registry.register(DeviceCollector(devices))
    metrics.registry.register(
        ServiceCollector(
            connected=lambda: link.connected,
            reconnects=lambda: link.reconnects,
            open_alerts=lambda: [(a.rule, a.severity.value) for a in live.open_alerts()],
        )
    )
    return feed


def _elsewhere(partition: Partition | None, site: Site, device: str) -> Partition | None:
    """The partition of `device` when another instance owns it, else None."""
    if partition is None or partition.owns(site, device):
        return None
    return Partition(partition.of_key(unit_of(site, device)), partition.count)


def _now(clock: SteadyClock) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


def _deliver(live: LiveState, commands: CommandSender, message: Accepted) -> None:
    """An accepted message, on paho's thread: a command's ack to the command sender that
    waits for it, anything else to the live state."""
    if isinstance(message.payload, CommandAck):
        commands.on_ack(message.route.device, message.route.gate, message.payload)
    else:
        live.observe(message)
