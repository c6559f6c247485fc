"""Writes one batch of decoded messages in one database transaction (the caller commits).

* measurements: COPY into a temporary staging table, then one ``INSERT ... ON CONFLICT DO
  NOTHING`` in key order (duplicates counted, never stored twice; key order keeps concurrent
  replicas from deadlocking). Servers without ``COPY FROM STDIN`` get one multi-row insert.
* transactions: appended to ``transaction_log`` (a redelivered copy is recognised by its
  hash and skipped), folded into the session's event by :mod:`ingestor.pairing` under a
  per-session advisory lock (replicas may hold messages of one session at the same time), and
  each new start / end writes its outbox row.
* rejected messages: into ``dead_letters`` with their raw bytes and reason.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg

from ingestor.decode import Decoded, Rejected
from ingestor.pairing import (
    EventStatus,
    Flag,
    SessionEvent,
    apply,
    close_for_timeout,
)
from ingestor.registry import RegistryEntry, lookup
from schemas.itron import StreamEvent, StreamKind
from schemas.pleevi import Measurement, Transaction

_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS ev_stage_measurements (
    asset_id text, ts timestamptz, energy_wh double precision, power_w double precision,
    state_of_charge_pct double precision, site_id text, received_at timestamptz
) ON COMMIT DELETE ROWS
"""
_MEASUREMENT_COLUMNS = "asset_id, ts, energy_wh, power_w, state_of_charge_pct, site_id, received_at"
_INSERT_STAGED = f"""
INSERT INTO measurements ({_MEASUREMENT_COLUMNS})
SELECT {_MEASUREMENT_COLUMNS} FROM ev_stage_measurements ORDER BY asset_id, ts
ON CONFLICT DO NOTHING
"""
_INSERT_UNNEST = f"""
INSERT INTO measurements ({_MEASUREMENT_COLUMNS})
SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::float8[], %s::float8[], %s::float8[],
                     %s::text[], %s::timestamptz[]) AS s ORDER BY 1, 2
ON CONFLICT DO NOTHING
"""

# The registry values an event carries: same names in charging_events and RegistryEntry.
_REGISTRY_COLUMNS = (
    "meter_id", "meter_number", "esn", "service_point_id", "premise_id", "transformer_id",
    "feeder_id",
)  # fmt: skip
_EVENT_COLUMNS = (
    "transaction_id", "charge_start_time", "asset_id", "site_id", "status", "close_reason",
    "charge_end_time", "charge_w", "start_power_w", "charge_duration_h", "charge_energy_wh",
    "meter_energy_wh", "received_time", "last_activity", "latest_ended", "latest_sequence",
    "latest_ts", "detector_version", "confidence", "saw_started", "message_flags", "flags",
    "start_emitted", "end_emitted", "registry_matched", *_REGISTRY_COLUMNS,
)  # fmt: skip
_UPSERT_EVENT = f"""
INSERT INTO charging_events ({", ".join(_EVENT_COLUMNS)})
VALUES ({", ".join(["%s"] * len(_EVENT_COLUMNS))})
ON CONFLICT (transaction_id, charge_start_time) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _EVENT_COLUMNS[2:])}, updated_at = now()
"""
_SELECT_EVENT = f"""
SELECT {", ".join(_EVENT_COLUMNS)} FROM charging_events WHERE transaction_id = %s
ORDER BY charge_start_time LIMIT 1
"""


@dataclass
class BatchResult:
    measurements_stored: int = 0
    measurements_duplicate: int = 0
    transactions_stored: int = 0
    transactions_duplicate: int = 0
    dead_letters: int = 0
    emitted: dict[StreamKind, int] = field(default_factory=lambda: defaultdict(int))


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A session event with the registry values it was enriched with (None = unknown)."""

    event: SessionEvent
    site_id: str
    registry: RegistryEntry | None


def message_hash(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


def stream_event(stored: StoredEvent, kind: StreamKind) -> StreamEvent:
    """The seed-001 message for ``kind``: a start or an end, identity fields on both."""
    event, reg = stored.event, stored.registry

    def positive(value: float | None) -> float | None:
        return value if value is not None and value >= 0 else None

    start = kind is StreamKind.START
    return StreamEvent(
        ServicePointID=reg.service_point_id if reg else None,
        MeterID=reg.meter_id if reg else event.asset_id,
        MeterNumber=reg.meter_number if reg else None,
        ESN=reg.esn if reg else None,
        TransformerID=reg.transformer_id if reg else None,
        PremiseID=reg.premise_id if reg else None,
        ReceivedTime=event.received_time,
        ChargeStartTime=event.start_time if start else None,
        ChargeW=positive(event.start_power_w) if start else None,
        ChargeEndTime=None if start else event.end_time,
        ChargeDuration=None if start else event.duration_h,
        ChargeEnergy=None if start else positive(event.energy_wh),
    )


def _event_row(stored: StoredEvent) -> tuple[Any, ...]:
    e, reg = stored.event, stored.registry
    flags = set(e.flags)
    if reg is None:
        flags.add(Flag.UNKNOWN_ASSET)
    ended, seq, latest_ts = e.latest_key
    return (
        e.transaction_id, e.start_time, e.asset_id, stored.site_id, e.status.value,
        e.close_reason, e.end_time, e.peak_power_w, e.start_power_w, e.duration_h, e.energy_wh,
        e.meter_energy_wh, e.received_time, e.last_activity, ended, seq, latest_ts,
        e.detector_version, e.confidence, e.saw_started, sorted(e.message_flags), sorted(flags),
        e.start_emitted, e.end_emitted, reg is not None,
        *(getattr(reg, column) if reg else None for column in _REGISTRY_COLUMNS),
    )  # fmt: skip


def _stored_from_row(row: Sequence[Any]) -> StoredEvent:
    r = dict(zip(_EVENT_COLUMNS, row, strict=True))
    event = SessionEvent(
        transaction_id=r["transaction_id"],
        asset_id=r["asset_id"],
        start_time=r["charge_start_time"],
        status=EventStatus(r["status"]),
        received_time=r["received_time"],
        last_activity=r["last_activity"],
        latest_key=(r["latest_ended"], r["latest_sequence"], r["latest_ts"]),
        end_time=r["charge_end_time"],
        start_power_w=r["start_power_w"],
        peak_power_w=r["charge_w"],
        energy_wh=r["charge_energy_wh"],
        meter_energy_wh=r["meter_energy_wh"],
        detector_version=r["detector_version"],
        confidence=r["confidence"],
        saw_started=r["saw_started"],
        close_reason=r["close_reason"],
        message_flags=frozenset(Flag(f) for f in r["message_flags"]),
        start_emitted=r["start_emitted"],
        end_emitted=r["end_emitted"],
    )
    registry = (
        RegistryEntry(valid_from=r["charge_start_time"], **{c: r[c] for c in _REGISTRY_COLUMNS})
        if r["registry_matched"]
        else None
    )
    return StoredEvent(event, r["site_id"], registry)


def _lock_session(conn: psycopg.Connection[Any], transaction_id: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (transaction_id,))


def _load_event(conn: psycopg.Connection[Any], transaction_id: str) -> StoredEvent | None:
    row = conn.execute(_SELECT_EVENT, (transaction_id,)).fetchone()
    return _stored_from_row(row) if row else None


def _save_event(
    conn: psycopg.Connection[Any], stored: StoredEvent, emits: Iterable[StreamKind]
) -> None:
    conn.execute(_UPSERT_EVENT, _event_row(stored))
    for kind in emits:
        payload = stream_event(stored, kind).model_dump(mode="json", by_alias=True)
        conn.execute(
            "INSERT INTO outbox (transaction_id, asset_id, kind, charge_start_time, payload)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (transaction_id, kind) DO NOTHING",
            (
                stored.event.transaction_id,
                stored.event.asset_id,
                kind.value,
                stored.event.start_time,
                orjson.dumps(payload).decode(),
            ),
        )


class Store:
    """The ingestor's SQL. ``use_copy=False`` for servers without COPY FROM STDIN."""

    def __init__(self, *, use_copy: bool = True) -> None:
        self.use_copy = use_copy

    def write_batch(
        self,
        conn: psycopg.Connection[Any],
        decoded: Sequence[Decoded],
        rejected: Sequence[Rejected],
    ) -> BatchResult:
        result = BatchResult()
        measurements = [d for d in decoded if isinstance(d.message, Measurement)]
        transactions = [d for d in decoded if isinstance(d.message, Transaction)]
        if measurements:
            stored = self._write_measurements(conn, measurements)
            result.measurements_stored = stored
            result.measurements_duplicate = len(measurements) - stored
        self._write_transactions(conn, transactions, result)
        for item in rejected:
            self.dead_letter(conn, item)
        result.dead_letters = len(rejected)
        return result

    def dead_letter(self, conn: psycopg.Connection[Any], item: Rejected) -> None:
        conn.execute(
            "INSERT INTO dead_letters (received_at, topic, payload, reason) VALUES (%s,%s,%s,%s)",
            (item.received.received_at, item.received.topic, item.received.payload, item.reason),
        )

    def _write_measurements(self, conn: psycopg.Connection[Any], batch: list[Decoded]) -> int:
        rows = []
        for d in batch:
            m = d.message
            assert isinstance(m, Measurement)
            rows.append(
                (m.asset_id, m.timestamp, m.energy_wh, m.power_w, m.state_of_charge_pct,
                 d.site_id, d.received.received_at)
            )  # fmt: skip
        if not self.use_copy:
            columns = [list(c) for c in zip(*rows, strict=True)]
            return conn.execute(_INSERT_UNNEST, columns).rowcount
        conn.execute(_STAGE)
        with conn.cursor().copy(
            f"COPY ev_stage_measurements ({_MEASUREMENT_COLUMNS}) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        return conn.execute(_INSERT_STAGED).rowcount

    def _write_transactions(
        self, conn: psycopg.Connection[Any], batch: list[Decoded], result: BatchResult
    ) -> None:
        by_session: dict[str, list[Decoded]] = defaultdict(list)
        for d in batch:
            assert isinstance(d.message, Transaction)
            by_session[d.message.transaction_id].append(d)
        # Sorted so that replicas take the session locks in one order (no deadlock).
        for transaction_id in sorted(by_session):
            _lock_session(conn, transaction_id)
            existing = _load_event(conn, transaction_id)
            event = existing.event if existing else None
            site_id = existing.site_id if existing else by_session[transaction_id][0].site_id
            if existing:
                registry = existing.registry
            else:
                first = by_session[transaction_id][0].message
                assert isinstance(first, Transaction)
                registry = lookup(conn, first.asset_id, first.start_time)
            emits: list[StreamKind] = []
            changed = False
            for d in by_session[transaction_id]:
                msg = d.message
                assert isinstance(msg, Transaction)
                if not self._log(conn, d, msg, registry):
                    result.transactions_duplicate += 1
                    continue
                result.transactions_stored += 1
                applied = apply(event, msg, d.received.received_at)
                event = applied.event
                emits.extend(applied.emits)
                changed = changed or applied.changed
            if event is not None and changed:
                _save_event(conn, StoredEvent(event, site_id, registry), emits)
                for kind in emits:
                    result.emitted[kind] += 1

    def close_orphans(
        self,
        conn: psycopg.Connection[Any],
        *,
        max_open: timedelta,
        silent_for: timedelta,
        now: datetime,
        limit: int = 500,
    ) -> int:
        """Close open sessions that will not end; returns how many.

        Judged on the meter's own clock, not the wall clock, so that a gateway replaying days
        of queued messages after an outage does not see its sessions timed out before their
        Ended arrives: a session is orphaned once its meter has reported readings more than
        ``max_open`` after the session's last activity, or once nothing has been received from
        the meter for ``silent_for`` (removed, or offline for good).
        """
        rows = conn.execute(
            "SELECT transaction_id, last_activity, NOT kept_reporting FROM ("
            " SELECT e.transaction_id, e.last_activity, EXISTS (SELECT 1 FROM measurements m"
            "   WHERE m.asset_id = e.asset_id AND m.ts > e.last_activity + %(max_open)s)"
            "   AS kept_reporting,"
            "  greatest(e.updated_at, (SELECT m.received_at FROM measurements m"
            "   WHERE m.asset_id = e.asset_id ORDER BY m.ts DESC LIMIT 1)) AS last_received"
            " FROM charging_events e WHERE e.status = 'open') AS open_sessions"
            " WHERE kept_reporting OR last_received < %(silent)s"
            " ORDER BY transaction_id LIMIT %(limit)s",
            {"silent": now - silent_for, "max_open": max_open, "limit": limit},
        ).fetchall()
        closed = 0
        for transaction_id, last_activity, silent in rows:
            _lock_session(conn, transaction_id)
            existing = _load_event(conn, transaction_id)
            if existing is None or existing.event.last_activity != last_activity:
                continue  # a message arrived meanwhile
            reason = (
                f"meter silent for {_hours(silent_for)} h with the session open"
                if silent
                else f"no Ended within {_hours(max_open)} h of the last message while the "
                "meter kept reporting"
            )
            applied = close_for_timeout(existing.event, reason=reason)
            if applied.changed:
                _save_event(
                    conn, StoredEvent(applied.event, existing.site_id, existing.registry),
                    applied.emits,
                )  # fmt: skip
                closed += 1
        return closed

    def _log(
        self,
        conn: psycopg.Connection[Any],
        d: Decoded,
        msg: Transaction,
        reg: RegistryEntry | None,
    ) -> bool:
        """Append to the transaction log; False when this exact message is already there."""
        return (
            conn.execute(
                "INSERT INTO transaction_log (ts, message_hash, transaction_id, asset_id, site_id,"
                " state, sequence_number, ev_power_w, ev_peak_power_w, ev_energy_wh,"
                " transformer_id, received_at, payload)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                (
                    msg.timestamp, message_hash(d.received.payload), msg.transaction_id,
                    msg.asset_id, d.site_id, msg.transaction_state.value, msg.sequence_number,
                    msg.ev_power_w, msg.ev_peak_power_w, msg.ev_energy_wh,
                    reg.transformer_id if reg else None, d.received.received_at,
                    d.received.payload.decode(),
                ),
            ).rowcount
            == 1
        )  # fmt: skip


def _hours(span: timedelta) -> str:
    return f"{span.total_seconds() / 3600:g}"
