"""Operator tools for the dead-letter table: list and replay (re-validate, re-ingest)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ingestor.decode import Decoded, Received, Rejected, decode
from ingestor.store import Store


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    received_at: datetime
    topic: str
    reason: str
    replay_count: int
    payload: bytes
    resolved_at: datetime | None


def list_dead_letters(
    conn: psycopg.Connection[Any], *, include_resolved: bool = False, limit: int = 100
) -> list[DeadLetter]:
    where = "" if include_resolved else "WHERE resolved_at IS NULL"
    rows = conn.execute(
        "SELECT id, received_at, topic, reason, replay_count, payload, resolved_at"
        f" FROM dead_letters {where} ORDER BY id LIMIT %s",
        (limit,),
    ).fetchall()
    return [DeadLetter(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6]) for r in rows]


@dataclass(frozen=True, slots=True)
class ReplayReport:
    ingested: int
    still_invalid: int


def replay(
    conn: psycopg.Connection[Any],
    store: Store,
    *,
    ids: Sequence[int] | None,
    prefix: str,
    max_bytes: int,
) -> ReplayReport:
    """Re-validate unresolved dead letters (all, or ``ids``) with the current code; the ones
    that now pass are ingested and marked resolved, the others get their new reason."""
    ingested = still_invalid = 0
    query = "SELECT id, received_at, topic, payload FROM dead_letters WHERE resolved_at IS NULL"
    params: tuple[Any, ...] = ()
    if ids is not None:
        query += " AND id = ANY(%s)"
        params = (list(ids),)
    for letter_id, received_at, topic, payload in conn.execute(query + " ORDER BY id", params):
        received = Received(topic, bytes(payload), received_at)
        out = decode(received, prefix=prefix, max_bytes=max_bytes)
        with conn.transaction():
            if isinstance(out, Rejected):
                conn.execute(
                    "UPDATE dead_letters SET reason = %s, replay_count = replay_count + 1"
                    " WHERE id = %s",
                    (out.reason, letter_id),
                )
                still_invalid += 1
                continue
            assert isinstance(out, Decoded)
            store.write_batch(conn, [out], [])
            conn.execute(
                "UPDATE dead_letters SET resolved_at = now(), replay_count = replay_count + 1"
                " WHERE id = %s",
                (letter_id,),
            )
            ingested += 1
    return ReplayReport(ingested, still_invalid)
