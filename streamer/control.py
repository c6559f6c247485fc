"""The streamer's side of power management: commands out, verdicts in, status events out.

* Commands: requested actions are published QoS 1 to ``{prefix}/{site}/{asset}/command`` with an
  MQTT 5 message expiry equal to the time left before the action lapses, so a broker holding it
  for an offline gateway drops it instead of delivering it late; ``sent_at`` is committed only
  after the broker's acknowledgement (at least once; the agent de-duplicates on ``actionId``).
* Verdicts: ``command-result`` messages arrive over a persistent shared subscription (replicas
  split them, none is lost while a streamer restarts) and are acknowledged after the action is
  settled in the database. Actions nobody answers in time fail with a reason.
* Status events go to the subscriber's ``{prefix}/control/{DataSubscriberId}/actions`` topic and
  to its webhooks (:mod:`streamer.webhooks`).
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import ValidationError

from runtime.mqtt import MqttConnection
from schemas.edrv import Action, CommandResult
from schemas.topics import (
    EdgeKind,
    TopicError,
    control_topic,
    edge_filter,
    edge_topic,
    parse_edge_topic,
)
from streamer import powerlimits
from streamer.delivery import BrokerUnavailableError, MqttPublisher, json_properties
from streamer.metrics import StreamMetrics
from streamer.webhooks import WebhookSender

log = logging.getLogger(__name__)
SHARE_GROUP = "streamer"


def result_subscription(prefix: str) -> str:
    return f"$share/{SHARE_GROUP}/{edge_filter(EdgeKind.COMMAND_RESULT, prefix=prefix)}"


class ResultListener:
    """Settles actions from the edge agents' command results, acknowledging after commit."""

    def __init__(
        self,
        connection: MqttConnection,
        pool: ConnectionPool,
        metrics: StreamMetrics,
        on_settled: Any = None,
    ) -> None:
        self.connection = connection
        self.pool = pool
        self.metrics = metrics
        self.prefix = connection.settings.topic_prefix
        self.on_settled = on_settled
        client = connection.client
        client.manual_ack_set(True)
        client.on_connect = self._on_connect
        client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(result_subscription(self.prefix), qos=1)

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = parse_edge_topic(message.topic, prefix=self.prefix)
            result = CommandResult.model_validate_json(message.payload)
        except (TopicError, ValidationError) as exc:
            self.metrics.command_results.labels("invalid").inc()
            log.warning("invalid command result on %s: %s", message.topic,
                        str(exc).splitlines()[0])  # fmt: skip
            client.ack(message.mid, message.qos)
            return
        try:
            with self.pool.connection() as conn:
                action = powerlimits.settle(conn, topic.site_id, result)
        except (psycopg.Error, PoolTimeout) as exc:
            # Not acknowledged: the broker delivers it again after a reconnect.
            log.warning("command result not stored, left unacknowledged: %s", exc)
            return
        client.ack(message.mid, message.qos)
        if action is None:
            self.metrics.command_results.labels("duplicate").inc()
            return
        self.metrics.command_results.labels("settled").inc()
        _count(self.metrics, [action])
        log.info("action %s %s: %s", action.id, action.status.value, action.reason or "")
        if self.on_settled is not None:
            self.on_settled()

    def start(self) -> None:
        self.connection.start()

    def stop(self) -> None:
        self.connection.stop()


def _count(metrics: StreamMetrics, actions: list[Action]) -> None:
    for action in actions:
        metrics.power_actions.labels(action.type.value, action.status.value).inc()


class ControlLoop:
    """One pass: fail overdue actions, send unsent commands, publish status events, webhooks."""

    def __init__(
        self,
        pool: ConnectionPool,
        publisher: MqttPublisher,
        metrics: StreamMetrics,
        webhooks: WebhookSender,
        *,
        prefix: str,
        answer_within: timedelta,
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.metrics = metrics
        self.webhooks = webhooks
        self.prefix = prefix
        self.answer_within = answer_within

    def run_once(self, now: datetime | None = None) -> int:
        """Work done (commands sent + events published + webhooks attempted)."""
        now = now or datetime.now(UTC)
        with self.pool.connection() as conn:
            _count(self.metrics, powerlimits.fail_overdue(
                conn, answer_within=self.answer_within, now=now))  # fmt: skip
        done = 0
        if self.publisher.connected:
            done += self._send_commands(now) + self._publish_events()
        while (attempted := self.webhooks.deliver_once(now)) > 0:
            done += attempted
        return done

    def _send_commands(self, now: datetime) -> int:
        with self.pool.connection() as conn:
            pending = powerlimits.unsent(conn)
            messages = []
            for item in pending:
                props = json_properties()
                left = (item.command.expires_at - now).total_seconds()
                props.MessageExpiryInterval = max(1, math.ceil(left))
                topic = edge_topic(
                    item.site_id, item.asset_id, EdgeKind.COMMAND, prefix=self.prefix
                )
                payload = item.command.model_dump_json(by_alias=True, exclude_none=True).encode()
                messages.append((topic, payload, props))
            if messages:
                self.publisher.send(messages)
                powerlimits.mark_sent(conn, [p.command.action_id for p in pending])
                log.info("sent %d power-limit commands", len(messages))
            return len(messages)

    def _publish_events(self) -> int:
        with self.pool.connection() as conn:
            events = powerlimits.unpublished_events(conn)
            if events:
                self.publisher.send([
                    (control_topic(e.subscriber_id, prefix=self.prefix), e.body, json_properties())
                    for e in events
                ])  # fmt: skip
                powerlimits.mark_published(conn, [e.event_id for e in events])
            return len(events)


def control_until(
    stop: threading.Event, loop: ControlLoop, wanted: threading.Event, poll_s: float
) -> None:
    """Run :class:`ControlLoop` when woken (API request, verdict) and at least every ``poll_s``."""
    while not stop.is_set():
        try:
            if loop.run_once() > 0:
                continue
        except BrokerUnavailableError as exc:
            log.warning("commands or status events not acknowledged, retrying: %s", exc)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("power-limit actions unavailable: %s", exc)
        wanted.wait(poll_s)
        wanted.clear()
