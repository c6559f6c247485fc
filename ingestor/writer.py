"""Decode a batch of received messages and commit it, surviving database trouble.

* Connection failures (server restart, network): retried with backoff until the database is
  back or the caller gives up; nothing is acknowledged meanwhile, so nothing is lost.
* Any other database error (a value the server refuses): the batch is retried one message at
  a time and the message that still fails goes to the dead-letter table with the error, so
  one bad message cannot block the stream.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from ingestor.decode import Decoded, Received, Rejected, RejectReason, decode
from ingestor.metrics import IngestMetrics
from ingestor.store import BatchResult, Store

log = logging.getLogger(__name__)

_RETRYABLE = (psycopg.OperationalError, PoolTimeout, psycopg.errors.DeadlockDetected,
              psycopg.errors.SerializationFailure)  # fmt: skip


class WriterStoppedError(RuntimeError):
    """The writer was asked to stop while the database was unavailable."""


class BatchWriter:
    def __init__(
        self,
        *,
        pool: ConnectionPool,
        store: Store,
        metrics: IngestMetrics,
        topic_prefix: str,
        max_payload_bytes: int,
        stop: threading.Event | None = None,
    ) -> None:
        self.pool = pool
        self.store = store
        self.metrics = metrics
        self.topic_prefix = topic_prefix
        self.max_payload_bytes = max_payload_bytes
        self.stop = stop or threading.Event()

    def decode(self, items: Sequence[Received]) -> tuple[list[Decoded], list[Rejected]]:
        decoded: list[Decoded] = []
        rejected: list[Rejected] = []
        for item in items:
            out = decode(item, prefix=self.topic_prefix, max_bytes=self.max_payload_bytes)
            if isinstance(out, Rejected):
                rejected.append(out)
            else:
                decoded.append(out)
        return decoded, rejected

    def write(self, items: Sequence[Received]) -> BatchResult:
        """Commit ``items``; returns only once they are durable (or raises WriterStoppedError)."""
        decoded, rejected = self.decode(items)
        started = time.perf_counter()
        try:
            result = self._with_retry(decoded, rejected)
        except psycopg.Error as exc:
            log.warning("batch of %d refused (%s); writing one message at a time", len(items), exc)
            self.metrics.db_errors.inc()
            result = self._one_by_one(decoded, rejected)
        self.metrics.write_latency.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(items))
        self._count(result, rejected)
        return result

    def _with_retry(self, decoded: Sequence[Decoded], rejected: Sequence[Rejected]) -> BatchResult:
        delay = 0.2
        while True:
            try:
                with self.pool.connection() as conn, conn.transaction():
                    return self.store.write_batch(conn, decoded, rejected)
            except _RETRYABLE as exc:
                self.metrics.db_errors.inc()
                if self.stop.is_set():
                    raise WriterStoppedError(str(exc)) from exc
                log.warning("database unavailable (%s); retrying in %.1f s", exc, delay)
                self.stop.wait(delay * (0.5 + random.random()))  # noqa: S311 (jitter)
                delay = min(delay * 2, 10.0)

    def _one_by_one(self, decoded: Sequence[Decoded], rejected: Sequence[Rejected]) -> BatchResult:
        total = BatchResult()
        refused: list[Rejected] = []
        for item in decoded:
            try:
                part = self._with_retry([item], [])
            except psycopg.Error as exc:
                log.error("message on %s refused by the database: %s", item.received.topic, exc)
                refused.append(Rejected(item.received, RejectReason.DATABASE, f"database: {exc}"))
                self.metrics.dead_letters.labels(RejectReason.DATABASE.value).inc()
                continue
            total.measurements_stored += part.measurements_stored
            total.measurements_duplicate += part.measurements_duplicate
            total.transactions_stored += part.transactions_stored
            total.transactions_duplicate += part.transactions_duplicate
            for kind, n in part.emitted.items():
                total.emitted[kind] += n
        if rejected or refused:
            self._with_retry([], [*rejected, *refused])
            total.dead_letters += len(rejected) + len(refused)
        return total

    def _count(self, result: BatchResult, rejected: Sequence[Rejected]) -> None:
        m = self.metrics.messages
        m.labels("measurement", "stored").inc(result.measurements_stored)
        m.labels("measurement", "duplicate").inc(result.measurements_duplicate)
        m.labels("transaction", "stored").inc(result.transactions_stored)
        m.labels("transaction", "duplicate").inc(result.transactions_duplicate)
        m.labels("rejected", "invalid").inc(len(rejected))
        for item in rejected:
            self.metrics.dead_letters.labels(item.category.value).inc()
        for kind, n in result.emitted.items():
            self.metrics.emitted.labels(kind.value).inc(n)
