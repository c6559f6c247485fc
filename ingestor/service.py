"""``python -m ingestor run``: migrations, pool, consumer, maintenance and metrics.

Shutdown (first SIGINT/SIGTERM): stop taking batches once the queue is drained (under a
deadline), commit and acknowledge what was taken, disconnect, close the pool. What was not
acknowledged is redelivered by the broker to this or another replica. A second signal exits.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import psycopg
from prometheus_client import CollectorRegistry
from psycopg_pool import ConnectionPool

from ingestor.consumer import Consumer
from ingestor.metrics import IngestMetrics
from ingestor.settings import IngestorSettings
from ingestor.store import Store
from ingestor.writer import BatchWriter
from runtime.database import open_pool
from runtime.httpserver import serve_metrics
from runtime.migrations import migrate
from runtime.signals import drain_on_signals

log = logging.getLogger(__name__)
_MAINTENANCE_LOCK = 0x65765F6D6E74  # "ev_mnt"


def maintain(
    pool: ConnectionPool, store: Store, metrics: IngestMetrics, settings: IngestorSettings
) -> None:
    """Close orphan sessions, keep partitions ahead, apply retention; one replica at a time."""
    with pool.connection() as conn:
        with conn.transaction():
            closed = store.close_orphans(
                conn,
                max_open=timedelta(hours=settings.max_open_hours),
                silent_for=timedelta(hours=settings.silent_meter_hours),
                now=datetime.now(UTC),
            )
        metrics.orphans_closed.inc(closed)
        with conn.transaction():
            got = conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s)", (_MAINTENANCE_LOCK,)
            ).fetchone()
            if got and got[0]:
                conn.execute("SELECT ev_ensure_partitions(now(), 3)")
                conn.execute("SELECT ev_apply_retention()")
        row = conn.execute("SELECT count(*) FROM charging_events WHERE status = 'open'").fetchone()
        metrics.open_sessions.set(row[0] if row else 0)


def run(settings: IngestorSettings) -> int:
    dsn = settings.database_url.get_secret_value()
    flavour, applied = migrate(dsn, flavour=settings.db_flavour)
    log.info("database ready (%s); migrations applied now: %s", flavour.value,
             ", ".join(applied) or "none")  # fmt: skip
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    pool = open_pool(dsn, max_size=settings.writers + 2)

    def pool_stats() -> None:
        stats = pool.get_stats()
        metrics.pool.labels("size").set(stats.get("pool_size", 0))
        metrics.pool.labels("available").set(stats.get("pool_available", 0))
        metrics.pool.labels("waiting").set(stats.get("requests_waiting", 0))

    store = Store(use_copy=settings.use_copy)
    stop = threading.Event()
    writer = BatchWriter(
        pool=pool,
        store=store,
        metrics=metrics,
        topic_prefix=settings.mqtt.topic_prefix,
        max_payload_bytes=settings.max_payload_bytes,
    )
    consumer = Consumer(
        mqtt=settings.mqtt,
        client_id=settings.client_id,
        session_expiry_s=settings.session_expiry_s,
        writer=writer,
        metrics=metrics,
        share_group=settings.share_group,
        batch_size=settings.batch_size,
        batch_delay_s=settings.batch_delay_s,
        max_inflight=settings.max_inflight,
        writers=settings.writers,
    )
    http = serve_metrics(
        registry,
        host=settings.metrics_host,
        port=settings.metrics_port,
        ready=lambda: consumer.connected,
    )
    log.info("metrics on http://%s:%d/metrics", *http.server_address[:2])

    drain_on_signals(stop, log, forced="unacknowledged messages are redelivered by the broker")
    consumer.start()
    try:
        while not stop.is_set():
            try:
                maintain(pool, store, metrics, settings)
            except psycopg.Error as exc:
                log.warning("maintenance failed (will retry): %s", exc)
            pool_stats()
            stop.wait(settings.sweep_interval_s)
    finally:
        consumer.stop(drain_timeout_s=settings.drain_timeout_s)
        http.shutdown()
        pool.close(timeout=5)
    log.info("stopped after %d committed batches", consumer.committed_batches)
    return 0
