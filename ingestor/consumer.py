"""MQTT side of the ingestor: a persistent subscription, bounded queues, ack after commit.

The subscriber's network thread deals messages into ``writers`` lanes by topic, so the
messages of one topic (one meter's transactions, hence one session) stay in one lane, in the
order they came. Each lane's writer thread takes batches (``batch_size`` messages or
``batch_delay_s``), commits them, and only then acknowledges them; while one lane commits,
another decodes, so the database's time overlaps with Python's. MQTT 5 Receive Maximum, kept
by the subscriber, bounds what is queued. Killed at any moment, the broker redelivers what was
not acknowledged, and storage is idempotent.

Packet ids are per connection: a message received before a reconnect is never acknowledged
after it (the broker redelivers it instead), so an ack cannot hit the wrong message.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import deque
from datetime import UTC, datetime

from ingestor.decode import Received
from ingestor.metrics import IngestMetrics
from ingestor.writer import BatchWriter, WriterStoppedError
from runtime.mqtt import MqttSettings
from runtime.mqtt_subscriber import BulkSubscriber, Inbound
from schemas.topics import EdgeKind, edge_filter

log = logging.getLogger(__name__)


class _Lane:
    """One writer's queue."""

    def __init__(self) -> None:
        self.queue: deque[Inbound] = deque()
        self.wakeup = threading.Event()


def subscriptions(prefix: str, group: str) -> list[str]:
    """Plain filters, or shared ones in ``group`` (replicas split the load)."""
    share = f"$share/{group}/" if group else ""
    return [
        f"{share}{edge_filter(kind, prefix=prefix)}"
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
        writers: int,
    ) -> None:
        self.writer = writer
        self.metrics = metrics
        self.topics = subscriptions(mqtt.topic_prefix, share_group)
        self.batch_size = batch_size
        self.batch_delay_s = batch_delay_s
        self.lanes = [_Lane() for _ in range(writers)]
        self._lane_of: dict[str, _Lane] = {}  # a stable hash: the same lanes on every run
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(lane,), name=f"ingest-writer-{i}", daemon=True)
            for i, lane in enumerate(self.lanes)
        ]
        self.connected = False
        self.committed_batches = 0
        self._count_lock = threading.Lock()
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
        for thread in self._threads:
            thread.start()
        self.subscriber.start()

    def queued(self) -> int:
        return sum(len(lane.queue) for lane in self.lanes)

    def stop(self, *, drain_timeout_s: float) -> None:
        """Commit and acknowledge what is queued (under a deadline), then disconnect."""
        deadline = time.monotonic() + drain_timeout_s
        while self.queued() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stopping.set()
        self.writer.stop.set()
        for thread in self._threads:
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
        self.subscriber.stop()

    def _on_connected(self, connected: bool) -> None:
        self.connected = connected
        self.metrics.connected.set(1 if connected else 0)
        if connected:
            log.info("connected; subscribed to %s", ", ".join(self.topics))

    def _on_messages(self, messages: list[Inbound]) -> None:
        lanes = self.lanes
        if len(lanes) == 1:
            lanes[0].queue.extend(messages)
        else:
            lane_of = self._lane_of
            for m in messages:
                lane = lane_of.get(m.topic)
                if lane is None:
                    lane = lane_of[m.topic] = lanes[zlib.crc32(m.topic.encode()) % len(lanes)]
                lane.queue.append(m)
        for lane in lanes:
            if len(lane.queue) >= self.batch_size:
                lane.wakeup.set()

    def _take_batch(self, lane: _Lane) -> list[Inbound]:
        """Up to ``batch_size`` messages, waiting at most ``batch_delay_s`` for a full one."""
        if len(lane.queue) < self.batch_size:
            lane.wakeup.wait(self.batch_delay_s)
        lane.wakeup.clear()
        batch: list[Inbound] = []
        popleft = lane.queue.popleft
        try:
            while len(batch) < self.batch_size:
                batch.append(popleft())
        except IndexError:
            pass
        self.metrics.inflight.set(self.queued())
        return batch

    def _run(self, lane: _Lane) -> None:
        while not self._stopping.is_set():
            batch = self._take_batch(lane)
            if not batch:
                continue
            try:
                self.writer.write(_received(batch))
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
            with self._count_lock:
                self.committed_batches += 1


def _received(batch: list[Inbound]) -> list[Received]:
    times: dict[float, datetime] = {}  # the messages of one read share their time
    out = []
    for m in batch:
        at = times.get(m.received_at)
        if at is None:
            at = times[m.received_at] = datetime.fromtimestamp(m.received_at, UTC)
        out.append(Received(m.topic, m.payload, at))
    return out
