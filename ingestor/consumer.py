"""MQTT side of the ingestor: a shared subscription, a bounded queue, ack after commit.

The subscriber's network thread appends messages to a queue; MQTT 5 Receive Maximum bounds it
(the broker never sends more than ``max_inflight`` unacknowledged messages), so memory stays
bounded without blocking the network thread. One writer thread takes batches (``batch_size``
messages or ``batch_delay_s``), commits them, and only then acknowledges them. Killed at any
moment, the broker redelivers what was not acknowledged, and storage is idempotent.

Packet ids are per connection: a message received before a reconnect is never acknowledged
after it (the broker redelivers it instead), so an ack cannot hit the wrong message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime

from ingestor.decode import Received
from ingestor.metrics import IngestMetrics
from ingestor.writer import BatchWriter, WriterStoppedError
from runtime.mqtt import MqttSettings
from runtime.mqtt_subscriber import BulkSubscriber, Inbound
from schemas.topics import EdgeKind, edge_filter

log = logging.getLogger(__name__)


def subscriptions(prefix: str, group: str) -> list[str]:
    return [
        f"$share/{group}/{edge_filter(kind, prefix=prefix)}"
        for kind in (EdgeKind.MEASUREMENT, EdgeKind.TRANSACTION)
    ]


class Consumer:
    def __init__(
        self,
        *,
        mqtt: MqttSettings,
        client_id: str,
        session_expiry_s: int,
        writer: BatchWriter,
        metrics: IngestMetrics,
        share_group: str,
        batch_size: int,
        batch_delay_s: float,
        max_inflight: int,
    ) -> None:
        self.writer = writer
        self.metrics = metrics
        self.topics = subscriptions(mqtt.topic_prefix, share_group)
        self.batch_size = batch_size
        self.batch_delay_s = batch_delay_s
        self._queue: deque[Inbound] = deque()
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self.connected = False
        self.committed_batches = 0
        self.subscriber = BulkSubscriber(
            mqtt,
            client_id,
            topics=self.topics,
            on_messages=self._on_messages,
            on_connected=self._on_connected,
            clean_start=False,
            session_expiry_s=session_expiry_s,
            receive_maximum=max_inflight,
        )

    def start(self) -> None:
        self._thread.start()
        self.subscriber.start()

    def stop(self, *, drain_timeout_s: float) -> None:
        """Commit and acknowledge what is queued (under a deadline), then disconnect."""
        deadline = time.monotonic() + drain_timeout_s
        while self._queue and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stopping.set()
        self.writer.stop.set()
        self._thread.join(timeout=max(1.0, deadline - time.monotonic()))
        self.subscriber.stop()

    def _on_connected(self, connected: bool) -> None:
        self.connected = connected
        self.metrics.connected.set(1 if connected else 0)
        if connected:
            log.info("connected; subscribed to %s", ", ".join(self.topics))

    def _on_messages(self, messages: list[Inbound]) -> None:
        self._queue.extend(messages)
        if len(self._queue) >= self.batch_size:
            self._wakeup.set()

    def _take_batch(self) -> list[Inbound]:
        """Up to ``batch_size`` messages, waiting at most ``batch_delay_s`` for a full one."""
        if len(self._queue) < self.batch_size:
            self._wakeup.wait(self.batch_delay_s)
        self._wakeup.clear()
        batch: list[Inbound] = []
        popleft = self._queue.popleft
        try:
            while len(batch) < self.batch_size:
                batch.append(popleft())
        except IndexError:
            pass
        self.metrics.inflight.set(len(self._queue))
        return batch

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self._take_batch()
            if not batch:
                continue
            try:
                self.writer.write([_received(m) for m in batch])
            except WriterStoppedError:
                log.warning("stopping with %d uncommitted messages (the broker keeps them)",
                            len(batch))  # fmt: skip
                return
            except Exception:
                # Not expected (the writer dead-letters what the database refuses); without
                # an ack the broker redelivers these after a reconnect.
                log.exception("batch of %d failed; left unacknowledged", len(batch))
                continue
            self.subscriber.ack(batch)
            self.committed_batches += 1


def _received(message: Inbound) -> Received:
    return Received(
        message.topic, message.payload, datetime.fromtimestamp(message.received_at, UTC)
    )
