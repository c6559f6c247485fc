"""Signed webhooks for power-limit status events: registration, signing, delivery.

A body is signed with the webhook's secret: header ``EV-Signature: t=<unix>,v1=<hex>`` where
``hex = HMAC-SHA256(secret, "<unix>." + body)`` (the timestamp lets a receiver refuse replays).
Delivery is at least once (``EV-Event-Id`` lets a receiver drop a repeat), in order per
session and webhook, retried with exponential backoff until ``give_up_after``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import psycopg
from psycopg_pool import ConnectionPool
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from schemas.timefmt import UtcDatetime
from streamer.metrics import StreamMetrics

log = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]
SIGNATURE_HEADER = "EV-Signature"
EVENT_ID_HEADER = "EV-Event-Id"


class WebhookRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: AnyHttpUrl = Field(description="Where status events are POSTed (http or https).")


class Webhook(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    url: str
    secret: str | None = Field(
        default=None, description="Signing secret; shown only when the webhook is created."
    )
    created_at: UtcDatetime = Field(alias="createdAt")


class UnknownWebhookError(LookupError):
    pass


class RefusedTargetError(ValueError):
    """A webhook URL that points inside the operator's network."""


def refused_target(url: str) -> str | None:
    """Why a webhook may not be posted to ``url``, or None. A subscriber's URL must reach the
    public internet: one that resolves to a loopback, private, link-local (cloud metadata),
    shared or reserved address would let a subscriber make the streamer call services behind
    the operator's firewall. Checked at registration and again before each POST (a name may be
    re-pointed); ``STREAM_WEBHOOK_PRIVATE_TARGETS`` allows them for an on-premises receiver."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return "the URL has no host"
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        return f"{host} does not resolve ({exc})"
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            return f"{host} resolves to {address}, not a public address"
    return None


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str, *, tolerance_s: float = 300.0) -> bool:
    """What a receiver does (and the tests): recompute, compare in constant time, check age."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, body, timestamp)
    return hmac.compare_digest(expected, header) and abs(time.time() - timestamp) <= tolerance_s


def register(
    conn: Conn, subscriber_id: str, request: WebhookRequest, *, private_targets: bool = False
) -> Webhook:
    if not private_targets and (reason := refused_target(str(request.url))):
        raise RefusedTargetError(reason)
    webhook_id, secret = uuid.uuid4().hex, secrets.token_urlsafe(32)
    row = conn.execute(
        "INSERT INTO webhooks (webhook_id, subscriber_id, url, secret) VALUES (%s, %s, %s, %s)"
        " RETURNING created_at",
        (webhook_id, subscriber_id, str(request.url), secret),
    ).fetchone()
    assert row is not None
    return Webhook(id=webhook_id, url=str(request.url), secret=secret, createdAt=row[0])


def list_webhooks(conn: Conn, subscriber_id: str) -> list[Webhook]:
    rows = conn.execute(
        "SELECT webhook_id, url, created_at FROM webhooks WHERE subscriber_id = %s"
        " ORDER BY created_at",
        (subscriber_id,),
    ).fetchall()
    return [Webhook(id=i, url=u, createdAt=c) for i, u, c in rows]


def delete(conn: Conn, subscriber_id: str, webhook_id: str) -> None:
    cur = conn.execute(
        "DELETE FROM webhooks WHERE webhook_id = %s AND subscriber_id = %s",
        (webhook_id, subscriber_id),
    )
    if cur.rowcount == 0:
        raise UnknownWebhookError(webhook_id)


# The oldest undelivered event of each (webhook, session) whose time has come.
_DUE = """
SELECT d.webhook_id, d.event_id, d.attempts, w.url, w.secret, e.body, e.body->>'event'
  FROM webhook_deliveries d
  JOIN webhooks w USING (webhook_id)
  JOIN power_action_events e USING (event_id)
 WHERE d.delivered_at IS NULL AND d.gave_up_at IS NULL AND d.next_attempt_at <= %s
   AND NOT EXISTS (
       SELECT 1 FROM webhook_deliveries p
        WHERE p.webhook_id = d.webhook_id AND p.transaction_id = d.transaction_id
          AND p.event_id < d.event_id AND p.delivered_at IS NULL AND p.gave_up_at IS NULL)
 ORDER BY d.event_id LIMIT %s
   FOR UPDATE OF d SKIP LOCKED
"""


@dataclass(frozen=True)
class RetryPolicy:
    first_delay_s: float = 1.0
    max_delay_s: float = 300.0
    give_up_after: timedelta = timedelta(hours=24)

    def delay(self, attempts: int) -> float:
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** max(0, attempts - 1)))


class WebhookSender:
    """Posts due deliveries; each row is locked while its POST runs, so replicas share the work."""

    def __init__(
        self,
        pool: ConnectionPool,
        metrics: StreamMetrics,
        *,
        policy: RetryPolicy = RetryPolicy(),
        timeout_s: float = 10.0,
        private_targets: bool = False,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.policy = policy
        self.private_targets = private_targets
        self.http = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def _post(self, url: str, secret: str, body: bytes, event_id: int, event: str) -> str | None:
        """None when the receiver took it (2xx), else why not."""
        if not self.private_targets and (reason := refused_target(url)):
            return f"refused: {reason}"
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body, int(time.time())),
            EVENT_ID_HEADER: str(event_id),
            "EV-Event": event,
        }
        try:
            response = self.http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def deliver_once(self, now: datetime, limit: int = 50) -> int:
        """Attempt the due deliveries; returns how many were attempted."""
        with self.pool.connection() as conn:
            due = conn.execute(_DUE, (now, limit)).fetchall()
            for webhook_id, event_id, attempted, url, secret, body, event in due:
                error = self._post(url, secret, orjson.dumps(body), event_id, event)
                attempts = attempted + 1
                if error is None:
                    conn.execute(
                        "UPDATE webhook_deliveries SET delivered_at = clock_timestamp(),"
                        " attempts = %s WHERE webhook_id = %s AND event_id = %s",
                        (attempts, webhook_id, event_id),
                    )
                    self.metrics.webhooks.labels("delivered").inc()
                    continue
                gave_up = conn.execute(
                    "UPDATE webhook_deliveries SET attempts = %s, last_error = %s,"
                    " next_attempt_at = clock_timestamp() + make_interval(secs => %s),"
                    " gave_up_at = CASE WHEN e.at < clock_timestamp() - %s"
                    "   THEN clock_timestamp() END"
                    " FROM power_action_events e WHERE e.event_id = webhook_deliveries.event_id"
                    "   AND webhook_id = %s AND webhook_deliveries.event_id = %s"
                    " RETURNING gave_up_at IS NOT NULL",
                    (attempts, error, self.policy.delay(attempts), self.policy.give_up_after,
                     webhook_id, event_id),
                ).fetchone()  # fmt: skip
                outcome = "gave_up" if gave_up and gave_up[0] else "retry"
                self.metrics.webhooks.labels(outcome).inc()
                log.warning("webhook %s event %s: %s (attempt %d, %s)", webhook_id, event_id,
                            error, attempts, outcome)  # fmt: skip
            return len(due)
