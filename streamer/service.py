"""``python -m streamer run``: migrations, HTTP API, outbox delivery, batch exports, metrics.

Shutdown (first SIGINT/SIGTERM): finish the delivery in hand (its commit follows the broker's
acknowledgements), stop the API, disconnect. A second signal exits at once; what was not
committed stays pending in the outbox and is delivered by this or another replica.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from prometheus_client import CollectorRegistry
from psycopg_pool import ConnectionPool, PoolTimeout

from runtime.database import open_pool
from runtime.httpserver import serve_metrics
from runtime.migrations import migrate
from runtime.mqtt import make_connection
from runtime.signals import drain_on_signals
from streamer import subscriptions
from streamer.api import create_app
from streamer.control import ControlLoop, ResultListener, control_until
from streamer.credentials import write_atomically
from streamer.delivery import BrokerUnavailableError, Deliverer, MqttPublisher, OutboxListener
from streamer.exports import ExportRunner, sweep_files
from streamer.metrics import StreamMetrics
from streamer.settings import BrokerFiles, StreamerSettings
from streamer.webhooks import RetryPolicy, WebhookSender

log = logging.getLogger(__name__)
DEFAULT_BASE_ACL = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "acl"


class BrokerFilesSync:
    """Keeps Mosquitto's password file and ACL in step with the subscribers and subscriptions:
    rewritten (atomically) only when their text changes, then the broker is told to reload."""

    def __init__(self, files: BrokerFiles, prefix: str) -> None:
        self.files = files
        self.prefix = prefix
        self.written: tuple[str, str] | None = None

    @property
    def enabled(self) -> bool:
        return self.files.passwd is not None and self.files.acl is not None

    def sync(self, conn: psycopg.Connection[Any]) -> bool:
        """True when the files were (re)written."""
        files = self.files
        if files.passwd is None or files.acl is None:
            return False
        base_acl = files.base_acl or DEFAULT_BASE_ACL
        texts = subscriptions.render_broker_files(
            conn,
            base_passwd=files.base_passwd.read_text() if files.base_passwd else "",
            base_acl=base_acl.read_text() if base_acl.exists() else "",
            prefix=self.prefix,
        )
        if texts == self.written:
            return False
        write_atomically(files.passwd, texts[0])
        write_atomically(files.acl, texts[1], mode=0o644)
        self.written = texts
        if files.reload_pidfile is not None and files.reload_pidfile.exists():
            os.kill(int(files.reload_pidfile.read_text().strip()), signal.SIGHUP)
        log.info("broker password file and ACL rewritten")
        return True


class ApiServer(uvicorn.Server):
    """uvicorn in a thread of ours (signals stay with the delivery loop)."""

    def install_signal_handlers(self) -> None:
        return

    def start_in_thread(self, timeout: float = 30.0) -> threading.Thread:
        """Serve in a daemon thread; returns once listening (or the thread died)."""
        thread = threading.Thread(target=self.run, name="http-api", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not self.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        return thread


def run(settings: StreamerSettings) -> int:
    dsn = settings.database_url.get_secret_value()
    flavour, applied = migrate(dsn)
    log.info("database ready (%s); migrations applied now: %s", flavour.value,
             ", ".join(applied) or "none")  # fmt: skip
    registry = CollectorRegistry()
    metrics = StreamMetrics(registry)
    pool = open_pool(dsn, max_size=6 + settings.export_workers)
    prefix = settings.mqtt.topic_prefix
    stop = threading.Event()
    export_wanted = threading.Event()
    runner = ExportRunner(
        pool, settings.export_dir, max_rows=settings.export_max_rows, metrics=metrics
    )
    exporters = [
        threading.Thread(
            target=_export_until,
            args=(stop, runner, export_wanted, settings.poll_interval_s),
            name=f"export-{i}",
            daemon=True,
        )
        for i in range(settings.export_workers)
    ]

    connection = make_connection(settings.mqtt, settings.client_id)
    publisher = MqttPublisher(connection, ack_timeout_s=settings.ack_timeout_s)
    deliverer = Deliverer(
        pool,
        publisher,
        metrics,
        prefix=prefix,
        batch_size=settings.batch_size,
        max_events=settings.max_events_per_message,
    )
    control_wanted = threading.Event()
    webhook_sender = WebhookSender(
        pool,
        metrics,
        policy=RetryPolicy(give_up_after=timedelta(hours=settings.webhook_give_up_hours)),
        timeout_s=settings.webhook_timeout_s,
        private_targets=settings.webhook_private_targets,
    )
    control = threading.Thread(
        target=control_until,
        args=(
            stop,
            ControlLoop(
                pool,
                publisher,
                metrics,
                webhook_sender,
                prefix=prefix,
                answer_within=timedelta(seconds=settings.command_answer_within_s),
            ),
            control_wanted,
            settings.control_poll_s,
        ),
        name="power-control",
        daemon=True,
    )
    # Persistent session: verdicts sent while this streamer restarts wait for it (or a peer).
    results = ResultListener(
        make_connection(
            settings.mqtt, f"{settings.client_id}-control", clean_start=False,
            session_expiry_s=86_400,
        ),
        pool,
        metrics,
        on_settled=control_wanted.set,
    )  # fmt: skip
    api = ApiServer(
        uvicorn.Config(
            create_app(
                pool,
                prefix=prefix,
                export_dir=settings.export_dir,
                metrics=metrics,
                on_batch_request=export_wanted.set,
                on_power_action=control_wanted.set,
                command_expiry=timedelta(seconds=settings.command_expiry_s),
                webhook_private_targets=settings.webhook_private_targets,
            ),
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
        )
    )
    api_thread = api.start_in_thread()
    if not api.started:
        # Running on without the API would look alive to the broker and dead to every client.
        log.error("the HTTP API could not listen on %s:%d; stopping", settings.http_host,
                  settings.http_port)  # fmt: skip
        api.should_exit = True
        pool.close(timeout=5)
        return 1
    http = serve_metrics(
        registry,
        host=settings.metrics_host,
        port=settings.metrics_port,
        ready=lambda: publisher.connected and api.started,
    )
    log.info("metrics on http://%s:%d/metrics; API on http://%s:%d", *http.server_address[:2],
             settings.http_host, settings.http_port)  # fmt: skip

    drain_on_signals(stop, log, forced="undelivered outbox rows stay pending")
    for exporter in exporters:
        exporter.start()
    connection.start()
    results.start()
    control.start()
    listener = OutboxListener(dsn)
    try:
        _deliver_until(
            stop,
            deliverer=deliverer,
            publisher=publisher,
            listener=listener,
            pool=pool,
            settings=settings,
        )
    finally:
        listener.close()
        control_wanted.set()
        control.join(timeout=5)
        results.stop()
        webhook_sender.close()
        api.should_exit = True
        api_thread.join(timeout=5)
        export_wanted.set()
        for exporter in exporters:
            exporter.join(timeout=5)  # a long export is picked up again by another streamer
        connection.stop()
        http.shutdown()
        pool.close(timeout=5)
    return 0


def _deliver_until(
    stop: threading.Event,
    *,
    deliverer: Deliverer,
    publisher: MqttPublisher,
    listener: OutboxListener,
    pool: ConnectionPool,
    settings: StreamerSettings,
) -> None:
    backoff = 0.5
    next_stats = 0.0
    broker_files = BrokerFilesSync(settings.broker_files, settings.mqtt.topic_prefix)
    replay_due = True
    while not stop.is_set():
        if time.monotonic() >= next_stats:
            next_stats = time.monotonic() + settings.stats_interval_s
            replay_due = True
            try:
                deliverer.observe_backlog()
                deliverer.sweep_delivered(timedelta(days=settings.outbox_keep_days))
                sweep_files(settings.export_dir, timedelta(days=settings.export_keep_days))
                if broker_files.enabled:
                    with pool.connection() as conn:
                        broker_files.sync(conn)
            except (psycopg.Error, PoolTimeout, OSError) as exc:
                log.warning("statistics / broker files not refreshed: %s", exc)
        if not publisher.wait_connected(timeout=1.0):
            continue
        try:
            report = deliverer.deliver_once()
            # History is replayed in the background: looked for on each statistics tick, then
            # batch after batch while there is some, never as a query on every delivery.
            replay_due = replay_due and deliverer.replay_once().claimed > 0
            backoff = 0.5
        except BrokerUnavailableError as exc:
            deliverer.metrics.errors.labels("broker").inc()
            log.warning("delivery rolled back, rows stay pending: %s", exc)
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
            continue
        except (psycopg.Error, PoolTimeout) as exc:
            deliverer.metrics.errors.labels("database").inc()
            log.warning("database unavailable, retrying in %.1f s: %s", backoff, exc)
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
            continue
        if report.claimed >= settings.batch_size or replay_due:
            continue  # more is waiting
        if listener.wait(settings.poll_interval_s) and settings.linger_s:
            stop.wait(settings.linger_s)


def _export_until(
    stop: threading.Event, runner: ExportRunner, wanted: threading.Event, poll_s: float
) -> None:
    """Run batch requests as they come: woken by this API, polling for other replicas'."""
    while not stop.is_set():
        try:
            runner.observe_queue()
            if runner.run_once() is not None:
                continue
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("export queue unavailable: %s", exc)
        wanted.wait(poll_s)
        wanted.clear()
