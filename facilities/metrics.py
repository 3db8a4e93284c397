"""Prometheus counters and histograms on the service's own registry, updated by the code."""

# What is read from the live state at scrape time is in live_metrics.py (no database I/O in a
# scrape, no module-level globals).

from collections.abc import Collection

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# The `device` label of a refusal from no device of the site file: one series for all of them,
# whatever ids a rogue client invents. Not a possible device id (ids never start with `_`).
UNKNOWN_DEVICE = "_unknown"


class IngestMetrics:
    """What ingest counts: messages by kind, rejections by reason and device, duplicates,
    batches. `devices`: the site file's station and garage ids, the only `device` labels."""

    def __init__(self, registry: CollectorRegistry, *, devices: Collection[str]) -> None:
        self._devices = frozenset(devices)
        self.ingested = Counter(
            "facilities_messages_ingested",
            "Device messages stored, by kind",
            ["kind"],
            registry=registry,
        )
        self.rejected = Counter(
            "facilities_messages_rejected",
            "Device messages quarantined, by reason and device (the site's; `_unknown` for others)",
            ["reason", "device"],
            registry=registry,
        )
        self.over_quota = Counter(
            "facilities_quarantine_over_quota",
            "Bad messages past their device's quarantine quota for the hour: counted, not kept"
            " (nor told to the device)",
            ["reason", "device"],
            registry=registry,
        )
        self.rejections_published = Counter(
            "facilities_rejections_published",
            "Refusals told to their device on its `.../rejected` topic",
            registry=registry,
        )
        self.retention_deleted = Counter(
            "facilities_retention_deleted_rows",
            "Rows deleted after their retention (quarantine, api_requests, ...), by table",
            ["table"],
            registry=registry,
        )
        self.duplicates = Counter(
            "facilities_messages_duplicate",
            "Redelivered messages that were already stored",
            registry=registry,
        )
        self.unknown_fields = Counter(
            "facilities_unknown_fields",
            "Payload fields the protocol does not define (ignored), by message kind",
            ["kind"],
            registry=registry,
        )
        self.write_failures = Counter(
            "facilities_ingest_write_failures",
            "Batch writes the database failed (`locked`: past its busy timeout; `failed`: full,"
            " I/O, read-only, corrupt): the batch is kept unacknowledged and written again",
            ["error"],
            registry=registry,
        )
        for error in ("locked", "failed"):  # both at 0 from the start
            self.write_failures.labels(error)
        self.batch_size = Histogram(
            "facilities_ingest_batch_messages",
            "Messages per committed batch",
            buckets=(1, 5, 20, 50, 100, 200, 500, 1000, 2000, 5000),
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "facilities_ingest_commit_seconds",
            "Time to write and commit one batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.ack_lag_seconds = Histogram(
            "facilities_ingest_ack_lag_seconds",
            "Time from receiving a message to acknowledging it to the broker (oldest of a batch)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.gate_events = Counter(
            "facilities_gate_events",
            "Gate events stored (entry, exit, denied, opened, closed, forced_open)",
            ["garage", "gate", "type"],
            registry=registry,
        )
        self.pending = Gauge(
            "facilities_ingest_pending_messages",
            "Messages received and not yet committed",
            registry=registry,
        )
        self.window_wait_seconds = Counter(
            "facilities_ingest_window_wait_seconds",
            "Time the broker link waited for the writer: the window of unacknowledged"
            " messages was full",
            registry=registry,
        )

    def device_label(self, device: str) -> str:
        """The `device` label of a refusal: a device of the site file, else `_unknown`, so
        that invented ids never make a series each."""
        return device if device in self._devices else UNKNOWN_DEVICE


class CommandMetrics:
    """Commands sent to devices (by the rules and by people) and how they ended."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "facilities_commands",
            "Commands sent to devices, by action and outcome (acked, refused, timeout)",
            ["action", "outcome"],
            registry=registry,
        )
        self.roundtrip_seconds = Histogram(
            "facilities_command_roundtrip_seconds",
            "Time from sending a command to the device's answer (acked or refused)",
            ["action"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0),
            registry=registry,
        )

    def done(self, action: str, outcome: str, seconds: float, *, answered: bool) -> None:
        self.sent.labels(action, outcome).inc()
        if answered:
            self.roundtrip_seconds.labels(action).observe(seconds)


class ApiMetrics:
    """HTTP requests by route template (bounded), and gate-open requests by outcome."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "facilities_http_requests",
            "HTTP requests, by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration_seconds = Histogram(
            "facilities_http_request_duration_seconds",
            "Time to answer an HTTP request (streams excluded), by route template",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.gate_opens = Counter(
            "facilities_gate_open_requests",
            "Gate-open requests from the garage-access app, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.refusals = Counter(
            "facilities_http_refusals",
            "Requests refused before any work, by reason: unauthorized, rate_limited (too many"
            " failed authentications), too_large (body), timeout (too slow to send a request),"
            " over_capacity (too many connections)",
            ["reason"],
            registry=registry,
        )
        self.live_clients = Gauge(
            "facilities_live_clients",
            "Clients of the live stream (SSE and WebSocket)",
            registry=registry,
        )
