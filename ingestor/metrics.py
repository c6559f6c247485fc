"""Prometheus metrics of the ingestor (namespace ``ev_ingest``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ingestor.decode import RejectReason
from schemas.itron import StreamKind

KINDS = ("measurement", "transaction", "rejected")
OUTCOMES = ("stored", "duplicate", "invalid")


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "ev_ingest_messages_total",
            "Messages by kind and outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
        for kind in KINDS:
            for outcome in OUTCOMES:
                self.messages.labels(kind, outcome)
        self.dead_letters = Counter(
            "ev_ingest_dead_letters_total",
            "Messages dead-lettered, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in RejectReason:
            self.dead_letters.labels(reason.value)
        self.emitted = Counter(
            "ev_ingest_outbox_events_total",
            "Seed-001 start/end rows written to the outbox.",
            ["kind"],
            registry=registry,
        )
        for stream_kind in StreamKind:
            self.emitted.labels(stream_kind.value)
        self.batch_size = Histogram(
            "ev_ingest_batch_messages",
            "Messages per committed batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=registry,
        )
        self.write_latency = Histogram(
            "ev_ingest_write_duration_seconds",
            "Time to write and commit one batch.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.db_errors = Counter(
            "ev_ingest_db_errors_total", "Batches the database failed.", registry=registry
        )
        self.inflight = Gauge(
            "ev_ingest_inflight_messages",
            "Messages received and not yet committed and acknowledged.",
            registry=registry,
        )
        self.open_sessions = Gauge(
            "ev_ingest_open_sessions", "Charging events still open.", registry=registry
        )
        self.orphans_closed = Counter(
            "ev_ingest_orphans_closed_total",
            "Sessions closed because no Ended arrived in time.",
            registry=registry,
        )
        self.connected = Gauge(
            "ev_ingest_broker_connected", "1 while connected to the broker.", registry=registry
        )
        self.pool = Gauge(
            "ev_ingest_db_pool_connections",
            "Database pool connections by state.",
            ["state"],
            registry=registry,
        )
