"""Power-limit actions (seed 003) in PostgreSQL: the one place their SQL lives.

An action is asked of an open session, sent to the session's edge agent as a command, and
settled once: ``completed`` when the agent verified the EV's power on the meter, ``failed``
when the charger refused, the power did not drop, or nobody answered in time. Each status is
one event row, written in the same transaction as the change, with one webhook delivery per
webhook of the action's subscriber; the event rows also feed the subscriber's MQTT status topic.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from schemas.edrv import (
    Action,
    ActionEvent,
    ActionStatus,
    ActionType,
    CommandResult,
    EdgeCommand,
    PowerLimit,
    StatusChange,
)
from schemas.subscriptions import ControlEntityType
from streamer.eventquery import ENTITY_COLUMN, TOKEN_COLUMN

Conn = psycopg.Connection[Any]
_ACTION_COLUMNS = (
    "action_id, type, status, transaction_id, asset_id, data, reason, measured_ev_power_w,"
    " expires_at, created_at, updated_at"
)


class SessionNotControllableError(LookupError):
    """The session is unknown or outside the subscriber's control scope (404: which of the two
    is not told, so sessions cannot be probed), or no longer charging (409)."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class UnknownActionError(LookupError):
    pass


@dataclass(frozen=True)
class PendingCommand:
    """A command to send: where to, and what."""

    site_id: str
    asset_id: str
    command: EdgeCommand


def _history(conn: Conn, action_id: str) -> list[StatusChange]:
    rows = conn.execute(
        "SELECT status, reason, at FROM power_action_events WHERE action_id = %s ORDER BY event_id",
        (action_id,),
    ).fetchall()
    return [StatusChange(status=ActionStatus(s), reason=r, at=at) for s, r, at in rows]


def _action(conn: Conn, row: tuple[Any, ...]) -> Action:
    (action_id, type_, status, session, asset, data, reason, measured,
     expires, created, updated) = row  # fmt: skip
    return Action(
        _id=action_id,
        type=ActionType(type_),
        status=ActionStatus(status),
        session=session,
        chargestation=asset,
        data=data,
        reason=reason,
        measuredEvPower=measured,
        expiresAt=expires,
        createdAt=created,
        updatedAt=updated,
        history=_history(conn, action_id),
    )


def _record_event(conn: Conn, action: Action) -> Action:
    """Record the status event of ``action``'s current status, and a delivery per webhook;
    returns the action with that status in its history."""
    body = ActionEvent.of(action).model_dump(mode="json", by_alias=True, exclude_none=True)
    row = conn.execute(
        "INSERT INTO power_action_events (action_id, status, reason, body, at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (action_id, status) DO NOTHING"
        " RETURNING event_id",
        (action.id, action.status.value, action.reason, Jsonb(body), action.updated_at),
    ).fetchone()
    if row is None:
        return action
    conn.execute(
        "INSERT INTO webhook_deliveries (webhook_id, event_id, transaction_id)"
        " SELECT w.webhook_id, %s, %s FROM webhooks w JOIN power_actions a"
        "   ON a.subscriber_id = w.subscriber_id WHERE a.action_id = %s",
        (row[0], action.session, action.id),
    )
    return action.model_copy(update={"history": _history(conn, action.id)})


# The column of a charging event that each kind of control scope names.
_SCOPE_COLUMN = {
    **{kind.value: column for kind, column in ENTITY_COLUMN.items()},
    ControlEntityType.FEEDER.value: TOKEN_COLUMN["feeder"],
}
# The session, if its meter was (as of the session's start, as the ingestor enriched it) in
# the subscriber's control scope (migrations 0006, 0007).
_SESSION_IN_SCOPE = sql.SQL(
    "SELECT c.site_id, c.asset_id, c.status FROM charging_events c"
    " JOIN subscribers s ON s.subscriber_id = %s"
    " WHERE c.transaction_id = %s AND (s.control_entity_type = 'None'"
    " OR CASE s.control_entity_type {} END = ANY (s.control_entity_ids))"
    " ORDER BY c.charge_start_time DESC LIMIT 1"
).format(
    sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN c.{}").format(sql.Literal(kind), sql.Identifier(column))
        for kind, column in _SCOPE_COLUMN.items()
    )
)


def request(
    conn: Conn,
    subscriber_id: str,
    transaction_id: str,
    action_type: ActionType,
    limit: PowerLimit | None,
    *,
    expires_in: timedelta,
    now: datetime,
) -> Action:
    """Record a new action on an open session; the command is sent by :func:`unsent`'s caller."""
    session = conn.execute(_SESSION_IN_SCOPE, (subscriber_id, transaction_id)).fetchone()
    if session is None:
        raise SessionNotControllableError(
            f"no session {transaction_id} that this subscriber may limit", status_code=404
        )
    site_id, asset_id, status = session
    if status != "open":
        raise SessionNotControllableError(
            f"session {transaction_id} has ended ({status}); only an ongoing session can be "
            "limited",
            status_code=409,
        )
    data = limit.model_dump(mode="json") if limit is not None else {}
    row = conn.execute(
        "INSERT INTO power_actions (action_id, subscriber_id, transaction_id, site_id, asset_id,"
        " type, data, expires_at, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        f" RETURNING {_ACTION_COLUMNS}",
        (uuid.uuid4().hex, subscriber_id, transaction_id, site_id, asset_id,
         action_type.value, Jsonb(data), now + expires_in, now, now),
    ).fetchone()  # fmt: skip
    assert row is not None
    return _record_event(conn, _action(conn, row))


def get(conn: Conn, action_id: str, subscriber_id: str) -> Action:
    """An action of this subscriber (another's is unknown, so ids cannot be probed)."""
    row = conn.execute(
        f"SELECT {_ACTION_COLUMNS} FROM power_actions WHERE action_id = %s AND subscriber_id = %s",
        (action_id, subscriber_id),
    ).fetchone()
    if row is None:
        raise UnknownActionError(action_id)
    return _action(conn, row)


def _settle(
    conn: Conn,
    where: str,
    params: tuple[Any, ...],
    *,
    status: ActionStatus,
    reason: str | None,
    measured_w: float | None = None,
    now: datetime | None = None,
) -> list[Action]:
    rows = conn.execute(
        "UPDATE power_actions SET status = %s, reason = %s, measured_ev_power_w = %s,"
        " updated_at = coalesce(%s, clock_timestamp())"
        f" WHERE status = 'requested' AND {where} RETURNING {_ACTION_COLUMNS}",
        (status.value, reason, measured_w, now, *params),
    ).fetchall()
    return [_record_event(conn, _action(conn, row)) for row in rows]


def settle(conn: Conn, site_id: str, result: CommandResult) -> Action | None:
    """Apply an edge agent's answer; None when it settles nothing (unknown, foreign site,
    already settled or a redelivered copy): an action is settled once."""
    if result.status is ActionStatus.REQUESTED:
        return None
    settled = _settle(
        conn,
        "action_id = %s AND site_id = %s AND transaction_id = %s",
        (result.action_id, site_id, result.transaction_id),
        status=result.status,
        reason=result.reason,
        measured_w=result.measured_ev_power_w,
    )
    return settled[0] if settled else None


def fail_overdue(conn: Conn, *, answer_within: timedelta, now: datetime) -> list[Action]:
    """Fail the actions nobody answered: never sent before they lapsed, or no verdict in time."""
    lapsed = _settle(
        conn,
        "sent_at IS NULL AND expires_at <= %s",
        (now,),
        status=ActionStatus.FAILED,
        reason="the command lapsed before the broker took it (broker unreachable)",
        now=now,
    )
    silent = _settle(
        conn,
        "sent_at IS NOT NULL AND created_at <= %s",
        (now - answer_within,),
        status=ActionStatus.FAILED,
        reason=f"no answer from the edge agent within {answer_within.total_seconds():g} s "
        "(gateway offline, or the command lapsed before it arrived)",
        now=now,
    )
    return lapsed + silent


def unsent(conn: Conn, *, limit: int = 100) -> list[PendingCommand]:
    """Requested actions whose command the broker has not acknowledged yet (locked: one
    streamer replica sends each)."""
    rows = conn.execute(
        "SELECT action_id, transaction_id, site_id, asset_id, type, data, created_at, expires_at"
        " FROM power_actions WHERE sent_at IS NULL AND status = 'requested'"
        " ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (limit,),
    ).fetchall()
    pending = []
    for action_id, session, site, asset, type_, data, created, expires in rows:
        command = EdgeCommand(
            actionId=action_id,
            transactionId=session,
            type=ActionType(type_),
            data=PowerLimit.model_validate(data) if data else None,
            issuedAt=created,
            expiresAt=expires,
        )
        pending.append(PendingCommand(site, asset, command))
    return pending


def mark_sent(conn: Conn, action_ids: list[str]) -> None:
    conn.execute(
        "UPDATE power_actions SET sent_at = clock_timestamp() WHERE action_id = ANY(%s)",
        (action_ids,),
    )


@dataclass(frozen=True)
class StatusEvent:
    event_id: int
    subscriber_id: str
    body: bytes


def unpublished_events(conn: Conn, *, limit: int = 100) -> list[StatusEvent]:
    rows = conn.execute(
        "SELECT e.event_id, a.subscriber_id, e.body FROM power_action_events e"
        " JOIN power_actions a USING (action_id) WHERE e.published_at IS NULL"
        " ORDER BY e.event_id LIMIT %s FOR UPDATE OF e SKIP LOCKED",
        (limit,),
    ).fetchall()
    return [StatusEvent(i, s, orjson.dumps(body)) for i, s, body in rows]


def mark_published(conn: Conn, event_ids: list[int]) -> None:
    conn.execute(
        "UPDATE power_action_events SET published_at = clock_timestamp() WHERE event_id = ANY(%s)",
        (event_ids,),
    )
