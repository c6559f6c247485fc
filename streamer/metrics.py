"""Prometheus metrics of the streamer (namespace ``ev_stream``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.edrv import ActionStatus, ActionType
from schemas.itron import StreamKind
from schemas.subscriptions import SubscriptionState

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "ev_stream_events_total",
            "Events routed to subscriptions, by the subscription's state: delivered to active "
            "ones, withheld from paused ones.",
            ["state"],
            registry=registry,
        )
        for state in SubscriptionState:
            self.events.labels(state.value)
        self.unmatched = Counter(
            "ev_stream_unmatched_rows_total",
            "Outbox rows no subscription wanted.",
            registry=registry,
        )
        self.swept = Counter(
            "ev_stream_outbox_swept_rows_total",
            "Delivered outbox rows deleted after STREAM_OUTBOX_KEEP_DAYS.",
            registry=registry,
        )
        self.replayed = Counter(
            "ev_stream_replayed_events_total",
            "Kept events replayed to subscriptions created with a start position.",
            registry=registry,
        )
        self.rows = Counter(
            "ev_stream_outbox_rows_total",
            "Outbox rows marked delivered, by kind.",
            ["kind"],
            registry=registry,
        )
        for kind in StreamKind:
            self.rows.labels(kind.value)
        self.publications = Counter(
            "ev_stream_publications_total",
            "MQTT messages published and acknowledged by the broker.",
            registry=registry,
        )
        self.publish_latency = Histogram(
            "ev_stream_publish_duration_seconds",
            "From publishing a batch to the broker's last acknowledgement of it.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.outbox_latency = Histogram(
            "ev_stream_outbox_to_ack_seconds",
            "From the ingestor's outbox write to the broker's acknowledgement, per row.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.received_latency = Histogram(
            "ev_stream_received_to_ack_seconds",
            "From a session's ReceivedTime to the acknowledgement of its start message.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.backlog = Gauge(
            "ev_stream_outbox_backlog_rows",
            "Outbox rows not yet delivered.",
            registry=registry,
        )
        self.backlog_age = Gauge(
            "ev_stream_outbox_oldest_pending_age_seconds",
            "Age of the oldest undelivered outbox row (0 when none).",
            registry=registry,
        )
        self.subscriptions = Gauge(
            "ev_stream_subscriptions",
            "Subscriptions by state.",
            ["state"],
            registry=registry,
        )
        for state in SubscriptionState:
            self.subscriptions.labels(state.value)
        self.errors = Counter(
            "ev_stream_errors_total",
            "Delivery attempts rolled back, by cause; the rows stay pending and are retried.",
            ["cause"],
            registry=registry,
        )
        for cause in ("broker", "database"):
            self.errors.labels(cause)
        self.on_demand_latency = Histogram(
            "ev_stream_on_demand_query_seconds",
            "Time to answer an on-demand page, database query included.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.export_jobs = Counter(
            "ev_stream_export_jobs_total",
            "Batch-request jobs finished, by outcome.",
            ["status"],
            registry=registry,
        )
        for outcome in ("done", "failed"):
            self.export_jobs.labels(outcome)
        self.export_rows = Counter(
            "ev_stream_export_rows_total",
            "Charging events written to batch-export files.",
            registry=registry,
        )
        self.export_duration = Histogram(
            "ev_stream_export_duration_seconds",
            "Time to write a batch-export file, by file type.",
            ["filetype"],
            buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=registry,
        )
        self.export_queue = Gauge(
            "ev_stream_export_jobs_waiting",
            "Batch-request jobs queued or running.",
            registry=registry,
        )
        self.power_actions = Counter(
            "ev_stream_power_actions_total",
            "Power-limit actions by type and status reached (requested, completed, failed).",
            ["type", "status"],
            registry=registry,
        )
        for action_type in ActionType:
            for action_status in ActionStatus:
                self.power_actions.labels(action_type.value, action_status.value)
        self.command_results = Counter(
            "ev_stream_command_results_total",
            "Edge agents' command results: settled an action, duplicate (already settled or "
            "unknown), invalid.",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("settled", "duplicate", "invalid"):
            self.command_results.labels(outcome)
        self.webhooks = Counter(
            "ev_stream_webhook_deliveries_total",
            "Webhook POSTs by outcome: delivered, retry (will be retried), gave_up.",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("delivered", "retry", "gave_up"):
            self.webhooks.labels(outcome)
