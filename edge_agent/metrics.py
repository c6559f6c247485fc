"""Prometheus metrics of the edge agent (namespace ``ev_edge``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.edrv import ActionStatus
from schemas.pleevi import TransactionState


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.readings = Counter(
            "ev_edge_readings_total", "Meter readings by outcome.", ["outcome"], registry=registry
        )
        for outcome in ("used", "dropped"):
            self.readings.labels(outcome)
        self.transactions = Counter(
            "ev_edge_transactions_total",
            "Session transitions by state.",
            ["state"],
            registry=registry,
        )
        for state in TransactionState:
            self.transactions.labels(state.value)
        self.second_look_sessions = Counter(
            "ev_edge_second_look_sessions_total",
            "Sessions the daily second look found that the live detector missed (sent late).",
            registry=registry,
        )
        self.meters_met = Counter(
            "ev_edge_meters_met_total",
            "Meters met for the first time (no saved state), primed from EDGE_HISTORY or cold: "
            "cold ones where a history was given are meters it does not hold.",
            ["start"],
            registry=registry,
        )
        for start in ("primed", "cold"):
            self.meters_met.labels(start)
        self.open_sessions = Gauge(
            "ev_edge_open_sessions", "Sessions currently charging or paused.", registry=registry
        )
        self.meters_with_panels = Gauge(
            "ev_edge_meters_with_panels",
            "Meters whose rooftop PV output the detector estimated from their lows and adds "
            "back to their readings (net meters that export).",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "ev_edge_queue_messages", "Messages in the durable queue.", registry=registry
        )
        self.queue_age = Gauge(
            "ev_edge_queue_oldest_age_seconds",
            "Age of the oldest queued message.",
            registry=registry,
        )
        self.queue_dropped = Counter(
            "ev_edge_queue_dropped_measurements_total",
            "Old measurements dropped because the queue hit its bound.",
            registry=registry,
        )
        self.published = Counter(
            "ev_edge_published_total", "Messages acknowledged by the broker.", ["kind"],
            registry=registry,
        )  # fmt: skip
        self.rejected = Counter(
            "ev_edge_rejected_total", "Messages the broker refused.", registry=registry
        )
        self.publish_latency = Histogram(
            "ev_edge_publish_latency_seconds",
            "From publish call to broker acknowledgement.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=registry,
        )
        self.connected = Gauge(
            "ev_edge_broker_connected", "1 while connected to the broker.", registry=registry
        )
        self.reconnects = Counter(
            "ev_edge_broker_connects_total", "Successful broker connections.", registry=registry
        )
        self.commands = Counter(
            "ev_edge_commands_total",
            "Power-limit commands received (received, invalid).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("received", "invalid"):
            self.commands.labels(outcome)
        self.command_results = Counter(
            "ev_edge_command_results_total",
            "Power-limit verdicts queued for the broker, by status.",
            ["status"],
            registry=registry,
        )
        for status in (ActionStatus.COMPLETED, ActionStatus.FAILED):
            self.command_results.labels(status.value)
