"""MQTT side of the ingestor: a shared subscription, a bounded queue, ack after commit.

paho's network thread appends each message to a queue; MQTT 5 Receive Maximum bounds it (the
broker never sends more than ``max_inflight`` unacknowledged messages), so memory stays bounded
without blocking the network thread. One writer thread takes batches (``batch_size`` messages
or ``batch_delay_s``), commits them, and only then acknowledges them (``manual_ack``). Killed
at any moment, the broker redelivers what was not acknowledged, and storage is idempotent.

Packet ids are per connection: a message received before a reconnect is never acknowledged
after it (the broker redelivers it instead), so an ack cannot hit the wrong message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from ingestor.decode import Received
from ingestor.metrics import IngestMetrics
from ingestor.writer import BatchWriter, WriterStoppedError
from runtime.mqtt import MqttConnection
from schemas.topics import EdgeKind, edge_filter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Delivery:
    topic: str
    payload: bytes
    received_at: float
    mid: int
    qos: int
    generation: int


def subscriptions(prefix: str, group: str) -> list[str]:
    return [
        f"$share/{group}/{edge_filter(kind, prefix=prefix)}"
        for kind in (EdgeKind.MEASUREMENT, EdgeKind.TRANSACTION)
    ]


class Consumer:
    def __init__(
        self,
        *,
        connection: MqttConnection,
        writer: BatchWriter,
        metrics: IngestMetrics,
        share_group: str,
        batch_size: int,
        batch_delay_s: float,
        max_inflight: int,
    ) -> None:
        self.connection = connection
        self.writer = writer
        self.metrics = metrics
        self.topics = subscriptions(connection.settings.topic_prefix, share_group)
        self.batch_size = batch_size
        self.batch_delay_s = batch_delay_s
        self._queue: deque[_Delivery] = deque()
        self._wakeup = threading.Event()
        self._generation = 0
        self._ack_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self.connected = False
        self.committed_batches = 0
        connection.properties.ReceiveMaximum = max_inflight
        client = connection.client
        client.manual_ack_set(True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message

    def start(self) -> None:
        self._thread.start()
        self.connection.start()

    def stop(self, *, drain_timeout_s: float) -> None:
        """Commit and acknowledge what is queued (under a deadline), then disconnect."""
        deadline = time.monotonic() + drain_timeout_s
        while self._queue and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stopping.set()
        self.writer.stop.set()
        self._thread.join(timeout=max(1.0, deadline - time.monotonic()))
        self.connection.stop()

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        with self._ack_lock:
            self._generation += 1
        self.connected = True
        self.metrics.connected.set(1)
        client.subscribe([(topic, 1) for topic in self.topics])
        log.info("connected; subscribed to %s", ", ".join(self.topics))

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self.connected = False
        self.metrics.connected.set(0)
        log.warning("disconnected from the broker: %s", reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.append(_Delivery(msg.topic, bytes(msg.payload), time.time(), msg.mid, msg.qos,
                                     self._generation))  # fmt: skip
        if len(self._queue) >= self.batch_size:
            self._wakeup.set()

    def _take_batch(self) -> list[_Delivery]:
        """Up to ``batch_size`` messages, waiting at most ``batch_delay_s`` for a full one."""
        if len(self._queue) < self.batch_size:
            self._wakeup.wait(self.batch_delay_s)
        self._wakeup.clear()
        batch: list[_Delivery] = []
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
                self.writer.write(
                    [
                        Received(d.topic, d.payload, datetime.fromtimestamp(d.received_at, UTC))
                        for d in batch
                    ]
                )
            except WriterStoppedError:
                log.warning("stopping with %d uncommitted messages (the broker keeps them)",
                            len(batch))  # fmt: skip
                return
            except Exception:
                # Not expected (the writer dead-letters what the database refuses); without
                # an ack the broker redelivers these after a reconnect.
                log.exception("batch of %d failed; left unacknowledged", len(batch))
                continue
            self._ack(batch)
            self.committed_batches += 1

    def _ack(self, batch: list[_Delivery]) -> None:
        client = self.connection.client
        with self._ack_lock:
            generation = self._generation
            for delivery in batch:
                if delivery.qos > 0 and delivery.generation == generation:
                    client.ack(delivery.mid, delivery.qos)
