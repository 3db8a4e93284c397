"""Prometheus metrics of the service, on a registry of its own (no module-level globals)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    """What ingest counts: messages by kind, rejections by reason, duplicates, batches."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ingested = Counter(
            "facilities_messages_ingested",
            "Device messages stored, by kind",
            ["kind"],
            registry=registry,
        )
        self.rejected = Counter(
            "facilities_messages_rejected",
            "Device messages quarantined, by reason",
            ["reason"],
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
        self.pending = Gauge(
            "facilities_ingest_pending_messages",
            "Messages received and not yet committed",
            registry=registry,
        )
