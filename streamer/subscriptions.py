"""Subscribers and subscriptions in PostgreSQL: the one place their SQL lives."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from schemas.itron import EntityType
from schemas.subscriptions import (
    ControlScope,
    SubscriptionRequest,
    SubscriptionState,
    SubscriptionView,
)
from schemas.topics import DEFAULT_PREFIX, control_topic, subscription_topic
from streamer.credentials import (
    broker_username,
    mosquitto_hash,
    new_secret,
    render_acl,
    render_passwd,
    token_hash,
)
from streamer.routing import Subscription

Conn = psycopg.Connection[Any]
_COLUMNS = (
    "subscription_id, subscriber_id, entity_type, entity_ids, state, replay_after,"
    " created_at, updated_at"
)


@dataclass(frozen=True)
class IssuedCredentials:
    """Shown once at issue; only hashes are stored."""

    subscriber_id: str
    api_token: str
    broker_username: str
    broker_password: str


class UnknownSubscriptionError(LookupError):
    pass


def issue_credentials(conn: Conn, subscriber_id: str) -> IssuedCredentials:
    """Create the subscriber, or replace its secrets (rotation) if it exists."""
    if not subscriber_id or "/" in subscriber_id or any(c in subscriber_id for c in "#+ :"):
        raise ValueError("a DataSubscriberId is non-empty and has no '/', '#', '+', ':' or space")
    token, password = new_secret(), new_secret()
    conn.execute(
        "INSERT INTO subscribers (subscriber_id, api_token_hash, broker_password_hash)"
        " VALUES (%s, %s, %s) ON CONFLICT (subscriber_id) DO UPDATE SET"
        " api_token_hash = excluded.api_token_hash,"
        " broker_password_hash = excluded.broker_password_hash",
        (subscriber_id, token_hash(token), mosquitto_hash(password)),
    )
    return IssuedCredentials(subscriber_id, token, broker_username(subscriber_id), password)


def set_control_scope(conn: Conn, subscriber_id: str, scope: ControlScope | None) -> None:
    """Grant (or, with None, withdraw) the sessions a subscriber may limit: those on the
    scope's entities as of their start. Only the operator does this (see migration 0006)."""
    found = conn.execute(
        "UPDATE subscribers SET control_entity_type = %s, control_entity_ids = %s"
        " WHERE subscriber_id = %s",
        (
            None if scope is None else scope.entity_type.value,
            [] if scope is None else list(scope.entity_ids),
            subscriber_id,
        ),
    ).rowcount
    if not found:
        raise ValueError(f"no subscriber {subscriber_id}")


def control_scope(conn: Conn, subscriber_id: str) -> ControlScope | None:
    """The subscriber's control scope; None when it may limit no session."""
    row = conn.execute(
        "SELECT control_entity_type, control_entity_ids FROM subscribers WHERE subscriber_id = %s",
        (subscriber_id,),
    ).fetchone()
    if row is None:
        raise ValueError(f"no subscriber {subscriber_id}")
    kind, ids = row
    return None if kind is None else ControlScope(EntityType=kind, EntityId=ids)


def authenticate(conn: Conn, token: str) -> str | None:
    """The subscriber whose API token this is, if any."""
    row = conn.execute(
        "SELECT subscriber_id FROM subscribers WHERE api_token_hash = %s", (token_hash(token),)
    ).fetchone()
    return row[0] if row else None


def _view(row: tuple[Any, ...], prefix: str) -> SubscriptionView:
    sub_id, subscriber, entity_type, ids, state, start_position, created, updated = row
    return SubscriptionView(
        SubscriptionId=sub_id,
        DataSubscriberId=subscriber,
        EntityType=EntityType(entity_type),
        EntityId=list(ids),
        Topic=subscription_topic(sub_id, prefix=prefix),
        State=SubscriptionState(state),
        StartPosition=start_position,
        CreatedAt=created,
        UpdatedAt=updated,
    )


def create(
    conn: Conn, subscriber_id: str, request: SubscriptionRequest, *, prefix: str = DEFAULT_PREFIX
) -> SubscriptionView:
    """Live delivery starts after the newest outbox row; an explicit start position also
    replays the kept rows from there up to that newest row."""
    row = conn.execute(
        "WITH newest AS (SELECT coalesce(max(id), 0) AS id FROM outbox)"
        " INSERT INTO subscriptions (subscription_id, subscriber_id, entity_type, entity_ids,"
        " start_after, replay_after, replay_until)"
        " SELECT %(id)s, %(subscriber)s, %(type)s, %(ids)s, newest.id,"
        " least(coalesce(%(start)s, newest.id), newest.id), newest.id FROM newest"
        f" RETURNING {_COLUMNS}",
        {
            "id": uuid.uuid4().hex,
            "subscriber": subscriber_id,
            "type": request.entity_type.value,
            "ids": sorted(set(request.entity_ids)),
            "start": request.start_position,
        },
    ).fetchone()
    assert row is not None
    return _view(row, prefix)


def list_views(
    conn: Conn, subscriber_id: str | None = None, *, prefix: str = DEFAULT_PREFIX
) -> list[SubscriptionView]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM subscriptions WHERE %(s)s::text IS NULL OR subscriber_id = %(s)s"
        " ORDER BY created_at, subscription_id",
        {"s": subscriber_id},
    ).fetchall()
    return [_view(row, prefix) for row in rows]


def get(
    conn: Conn,
    subscription_id: str,
    subscriber_id: str | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
) -> SubscriptionView:
    """One subscription; a subscriber asking for another's is told it does not exist."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM subscriptions WHERE subscription_id = %(id)s"
        " AND (%(s)s::text IS NULL OR subscriber_id = %(s)s)",
        {"id": subscription_id, "s": subscriber_id},
    ).fetchone()
    if row is None:
        raise UnknownSubscriptionError(subscription_id)
    return _view(row, prefix)


def set_state(
    conn: Conn,
    subscription_id: str,
    state: SubscriptionState,
    subscriber_id: str | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
) -> SubscriptionView:
    row = conn.execute(
        f"UPDATE subscriptions SET state = %(state)s, updated_at = now()"
        " WHERE subscription_id = %(id)s AND (%(s)s::text IS NULL OR subscriber_id = %(s)s)"
        f" RETURNING {_COLUMNS}",
        {"state": state.value, "id": subscription_id, "s": subscriber_id},
    ).fetchone()
    if row is None:
        raise UnknownSubscriptionError(subscription_id)
    return _view(row, prefix)


def delete(conn: Conn, subscription_id: str, subscriber_id: str | None = None) -> None:
    cur = conn.execute(
        "DELETE FROM subscriptions WHERE subscription_id = %(id)s"
        " AND (%(s)s::text IS NULL OR subscriber_id = %(s)s)",
        {"id": subscription_id, "s": subscriber_id},
    )
    if cur.rowcount == 0:
        raise UnknownSubscriptionError(subscription_id)


def claim_replay(conn: Conn) -> tuple[Subscription, int] | None:
    """One active subscription with history still to replay, locked for this transaction, as a
    routing subscription starting at its replay position, and where its replay ends."""
    row = conn.execute(
        "SELECT subscription_id, entity_type, entity_ids, replay_after, replay_until"
        " FROM subscriptions WHERE replay_after < replay_until AND state = 'active'"
        " ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    ).fetchone()
    if row is None:
        return None
    sid, etype, ids, replay_after, replay_until = row
    return Subscription(sid, EntityType(etype), frozenset(ids), replay_after), replay_until


def advance_replay(conn: Conn, subscription_id: str, position: int) -> None:
    conn.execute(
        "UPDATE subscriptions SET replay_after = %s WHERE subscription_id = %s",
        (position, subscription_id),
    )


def for_routing(conn: Conn) -> list[Subscription]:
    """Every subscription, paused ones included (they are counted, not delivered to)."""
    rows = conn.execute(
        "SELECT subscription_id, entity_type, entity_ids, start_after, state FROM subscriptions"
    ).fetchall()
    return [
        Subscription(sid, EntityType(etype), frozenset(ids), start_after, SubscriptionState(state))
        for sid, etype, ids, start_after, state in rows
    ]


def render_broker_files(
    conn: Conn, *, base_passwd: str, base_acl: str, prefix: str = DEFAULT_PREFIX
) -> tuple[str, str]:
    """Mosquitto's password file and ACL for every subscriber, as text."""
    hashes = dict(conn.execute("SELECT subscriber_id, broker_password_hash FROM subscribers"))
    grants: dict[str, list[str]] = {sid: [control_topic(sid, prefix=prefix)] for sid in hashes}
    for sid, sub_id in conn.execute("SELECT subscriber_id, subscription_id FROM subscriptions"):
        grants[sid].append(subscription_topic(sub_id, prefix=prefix))
    return render_passwd(base_passwd, hashes), render_acl(base_acl, grants)
