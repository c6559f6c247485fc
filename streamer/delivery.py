"""Outbox -> subscription topics, at least once, in order per meter, one replica per row.

One delivery is one database transaction: claim pending rows, route them, publish QoS 1, wait
for every PUBACK, mark the rows delivered, commit. A streamer killed anywhere before the commit
leaves its rows pending (redelivered, de-duplicated by the subscriber on ``event-id``); a broker
that does not acknowledge in time rolls the transaction back.

Replicas: rows are claimed ``FOR UPDATE SKIP LOCKED`` together with a transaction-scoped
advisory lock per meter, so while one replica holds any of a meter's rows no other replica
takes a later row of that meter; that keeps each meter's events in order across replicas.
"Order" is outbox-id order among committed rows: two ingestor replicas committing two sessions
of one meter at the same moment could make the lower id visible after the higher one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg_pool import ConnectionPool

from runtime.mqtt import MqttConnection
from schemas.itron import StreamKind
from schemas.subscriptions import SubscriptionState
from schemas.timefmt import parse_utc
from streamer import subscriptions
from streamer.metrics import StreamMetrics
from streamer.routing import OutboxRow, Publication, route

log = logging.getLogger(__name__)

_METER_LOCK_CLASS = 0x6576  # "ev": keeps the per-meter keys apart from other advisory locks
_CLAIM = """
SELECT id, transaction_id, kind, payload, created_at, asset_id FROM outbox
 WHERE delivered_at IS NULL AND pg_try_advisory_xact_lock(%s, hashtext(asset_id))
 ORDER BY id LIMIT %s
   FOR UPDATE SKIP LOCKED
"""
# The lock is tried row by row during the scan: a meter skipped early in it (another replica
# held it) can be locked later in the same scan once that replica commits, so a later row of
# the meter could be claimed while an earlier one is still pending. Such meters sit this batch out.
_BEHIND = """
SELECT DISTINCT o.asset_id FROM outbox o
  JOIN unnest(%s::text[], %s::bigint[]) AS c(asset_id, first_id) ON o.asset_id = c.asset_id
 WHERE o.delivered_at IS NULL AND o.id < c.first_id
"""


def json_properties() -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = "application/json"
    return props


class BrokerUnavailableError(RuntimeError):
    """Not connected, or the broker did not acknowledge every publish in time."""


class MqttPublisher:
    """QoS 1 publishes that report success only when the broker acknowledged all of them."""

    def __init__(self, connection: MqttConnection, *, ack_timeout_s: float) -> None:
        self.connection = connection
        self.ack_timeout_s = ack_timeout_s
        self._connected = threading.Event()
        client = connection.client
        client.max_inflight_messages_set(65_535)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            self._connected.set()
            log.info("connected to the broker")
        else:
            log.warning("broker refused the connection: %s", reason)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connected.clear()
        log.warning("disconnected from the broker: %s", reason)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, publications: Sequence[Publication]) -> None:
        messages = []
        for pub in publications:
            props = json_properties()
            props.UserProperty = pub.user_properties()
            messages.append((pub.topic, pub.payload(), props))
        self.send(messages)

    def send(self, messages: Sequence[tuple[str, bytes, Properties]]) -> None:
        """Publish QoS 1 and return once the broker acknowledged every message."""
        if not self.connected:
            raise BrokerUnavailableError("not connected to the broker")
        infos = [
            self.connection.client.publish(topic, payload, 1, False, props)
            for topic, payload, props in messages
        ]
        deadline = time.monotonic() + self.ack_timeout_s
        for info in infos:
            while not info.is_published():
                if time.monotonic() > deadline or not self.connected:
                    raise BrokerUnavailableError(
                        f"{sum(not i.is_published() for i in infos)} of {len(infos)} publishes "
                        "not acknowledged"
                    )
                time.sleep(0.0005)


@dataclass(frozen=True)
class DeliveryReport:
    claimed: int
    publications: int


class Deliverer:
    def __init__(
        self,
        pool: ConnectionPool,
        publisher: MqttPublisher,
        metrics: StreamMetrics,
        *,
        prefix: str,
        batch_size: int,
        max_events: int,
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.metrics = metrics
        self.prefix = prefix
        self.batch_size = batch_size
        self.max_events = max_events

    def deliver_once(self) -> DeliveryReport:
        """Claim, route, publish, commit one batch; raises and rolls back on failure."""
        with self.pool.connection() as conn, conn.transaction():
            claimed = conn.execute(_CLAIM, (_METER_LOCK_CLASS, self.batch_size)).fetchall()
            first: dict[str, int] = {}
            for pos, *_, asset in claimed:
                first.setdefault(asset, pos)
            if first:
                behind = conn.execute(_BEHIND, (list(first), list(first.values()))).fetchall()
                waiting = {asset for (asset,) in behind}
                claimed = [row for row in claimed if row[-1] not in waiting]
            if not claimed:
                return DeliveryReport(0, 0)
            rows = [
                OutboxRow(pos, tid, StreamKind(kind), event)
                for pos, tid, kind, event, _, _ in claimed
            ]
            # Read in the claiming transaction: a subscription visible now sees these rows.
            routing = route(
                rows,
                subscriptions.for_routing(conn),
                prefix=self.prefix,
                max_events=self.max_events,
            )
            started = time.monotonic()
            self.publisher.publish(routing.publications)
            self.metrics.publish_latency.observe(time.monotonic() - started)
            conn.execute(
                "UPDATE outbox SET delivered_at = now() WHERE id = ANY(%s)",
                ([row.position for row in rows],),
            )
        self._count(rows, [created for *_, created, _ in claimed], routing.publications)
        m = self.metrics
        m.events.labels(SubscriptionState.ACTIVE.value).inc(routing.deliveries)
        m.events.labels(SubscriptionState.PAUSED.value).inc(routing.paused)
        m.unmatched.inc(routing.unmatched)
        return DeliveryReport(len(rows), len(routing.publications))

    def replay_once(self) -> DeliveryReport:
        """Replay one batch of kept history to one subscription that asked for it."""
        with self.pool.connection() as conn, conn.transaction():
            claimed = subscriptions.claim_replay(conn)
            if claimed is None:
                return DeliveryReport(0, 0)
            sub, until = claimed
            found = conn.execute(
                "SELECT id, transaction_id, kind, payload FROM outbox"
                " WHERE id > %s AND id <= %s ORDER BY id LIMIT %s",
                (sub.start_after, until, self.batch_size),
            ).fetchall()
            rows = [OutboxRow(pos, tid, StreamKind(kind), event) for pos, tid, kind, event in found]
            routing = route(rows, [sub], prefix=self.prefix, max_events=self.max_events)
            self.publisher.publish(routing.publications)
            done = len(rows) < self.batch_size
            subscriptions.advance_replay(
                conn, sub.subscription_id, until if done else rows[-1].position
            )
        self.metrics.publications.inc(len(routing.publications))
        self.metrics.replayed.inc(routing.deliveries)
        return DeliveryReport(len(rows), len(routing.publications))

    def _count(
        self, rows: list[OutboxRow], created: list[datetime], publications: list[Publication]
    ) -> None:
        now = datetime.now(UTC)
        self.metrics.publications.inc(len(publications))
        for row, written in zip(rows, created, strict=True):
            self.metrics.rows.labels(row.kind.value).inc()
            self.metrics.outbox_latency.observe(max(0.0, (now - written).total_seconds()))
            received = row.event.get("ReceivedTime")
            if row.kind is StreamKind.START and isinstance(received, str):
                self.metrics.received_latency.observe(
                    max(0.0, (now - parse_utc(received)).total_seconds())
                )

    def observe_backlog(self) -> None:
        with self.pool.connection() as conn:
            pending = conn.execute(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)"
                " FROM outbox WHERE delivered_at IS NULL"
            ).fetchone()
            states: dict[str, int] = dict(
                conn.execute("SELECT state, count(*) FROM subscriptions GROUP BY 1")
            )
        assert pending is not None
        self.metrics.backlog.set(pending[0])
        self.metrics.backlog_age.set(float(pending[1]))
        for state in SubscriptionState:
            self.metrics.subscriptions.labels(state.value).set(states.get(state.value, 0))

    def sweep_delivered(self, keep: timedelta, *, limit: int = 10_000) -> int:
        """Delete delivered outbox rows older than ``keep`` (the horizon of StartPosition
        replays), at most ``limit`` at a time; how many went."""
        with self.pool.connection() as conn:
            swept = conn.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
                " WHERE delivered_at < now() - %s ORDER BY id LIMIT %s)",
                (keep, limit),
            ).rowcount
        self.metrics.swept.inc(swept)
        return swept


class OutboxListener:
    """Waits for the ingestor's ``ev_outbox`` notifications (a trigger sends them), falling back
    to a poll when the listening connection is down or a notification was missed."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def wait(self, timeout: float) -> bool:
        """True when notified, False after ``timeout``."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.dsn, autocommit=True)
                self._conn.execute("LISTEN ev_outbox")
                return True  # rows may have arrived while we were not listening
            notified = False
            for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                notified = True
            if notified:  # several writers may have notified: take them all at once
                for _ in self._conn.notifies(timeout=0.0):
                    pass
            return notified
        except psycopg.OperationalError as exc:
            log.warning("outbox listener lost its connection (polling until back): %s", exc)
            self.close()
            time.sleep(min(timeout, 1.0))
            return False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
