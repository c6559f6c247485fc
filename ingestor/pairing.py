"""Pairing: the transaction messages of one ``transactionId`` folded into one charging event.

Pure (no I/O). The fold is order-independent and idempotent, because delivery is at least once
and replicas see messages in any order:

* values that describe the whole session (peak power, first receipt, last activity, quality
  flags) are combined with max / min / union, which commute;
* values that evolve (energy, end time, detector version) come from the *latest* message by
  ``(is Ended, sequenceNumber, timestamp)``, so an old message replayed late never overwrites
  a newer one;
* a closed session is never reopened: a late ``Started``/``Updated``/``SuspendedEV`` only adds
  to the commutative values.

What the fold decides to emit (a seed-001 start and end, each exactly once) is part of the
state, so the I/O layer can write outbox rows in the same database transaction. The start
waits for the Started message (or the session's end), so its ChargeW is the Started's power
whatever came before it; only an Ended that overtakes the Started fixes it earlier.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from schemas.itron import StreamKind
from schemas.pleevi import Transaction, TransactionState

FUTURE_SKEW = timedelta(minutes=5)
EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)
REGISTER_TOLERANCE_WH = 10.0
REGISTER_TOLERANCE_RATIO = 1.02


class EventStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    TIMED_OUT = "timed_out"


class Flag(StrEnum):
    """Data-quality flags: kept with the event, never silently fixed."""

    ENERGY_EXCEEDS_REGISTER = "energy_exceeds_register"
    END_BEFORE_START = "end_before_start"
    FUTURE_TIMESTAMP = "future_timestamp"
    BEFORE_2000 = "before_2000"
    NEGATIVE_VALUE = "negative_value"
    START_TIME_CONFLICT = "start_time_conflict"
    STARTED_AFTER_CLOSE = "started_after_close"
    ENDED_AFTER_TIMEOUT = "ended_after_timeout"
    UNKNOWN_ASSET = "unknown_asset"


_LatestKey = tuple[bool, int, datetime]


def _latest_key(msg: Transaction) -> _LatestKey:
    seq = msg.sequence_number if msg.sequence_number is not None else -1
    return (msg.transaction_state is TransactionState.ENDED, seq, msg.timestamp)


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """Everything known about one session; the row of ``charging_events``."""

    transaction_id: str
    asset_id: str
    start_time: datetime
    status: EventStatus
    received_time: datetime
    last_activity: datetime
    latest_key: _LatestKey
    end_time: datetime | None = None
    start_power_w: float | None = None
    peak_power_w: float | None = None
    energy_wh: float | None = None
    meter_energy_wh: float | None = None
    detector_version: str | None = None
    confidence: float | None = None
    saw_started: bool = False
    close_reason: str | None = None
    message_flags: frozenset[Flag] = frozenset()
    start_emitted: bool = False
    end_emitted: bool = False

    @property
    def duration_h(self) -> float | None:
        if self.end_time is None or self.end_time < self.start_time:
            return None
        return (self.end_time - self.start_time).total_seconds() / 3600.0

    @property
    def flags(self) -> frozenset[Flag]:
        derived = set(self.message_flags)
        if self.end_time is not None and self.end_time < self.start_time:
            derived.add(Flag.END_BEFORE_START)
        if (
            self.energy_wh is not None
            and self.meter_energy_wh is not None
            and self.energy_wh
            > self.meter_energy_wh * REGISTER_TOLERANCE_RATIO + REGISTER_TOLERANCE_WH
        ):
            derived.add(Flag.ENERGY_EXCEEDS_REGISTER)
        return frozenset(derived)


@dataclass(frozen=True, slots=True)
class Applied:
    event: SessionEvent
    emits: tuple[StreamKind, ...]
    changed: bool


def message_flags(msg: Transaction, received_at: datetime) -> frozenset[Flag]:
    flags: set[Flag] = set()
    times = [msg.timestamp, msg.start_time] + ([msg.stop_time] if msg.stop_time else [])
    if any(t > received_at + FUTURE_SKEW for t in times):
        flags.add(Flag.FUTURE_TIMESTAMP)
    if any(t < EPOCH_2000 for t in times):
        flags.add(Flag.BEFORE_2000)
    values = (msg.ev_energy_wh, msg.ev_power_w, msg.ev_peak_power_w, msg.meter_energy_wh)
    if any(v is not None and v < 0 for v in values):
        flags.add(Flag.NEGATIVE_VALUE)
    return frozenset(flags)


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _message_peak(msg: Transaction) -> float | None:
    return _max(msg.ev_peak_power_w, msg.ev_power_w)


def _end_time(msg: Transaction) -> datetime:
    return msg.stop_time if msg.stop_time is not None else msg.timestamp


def _new_event(msg: Transaction, received_at: datetime) -> SessionEvent:
    return SessionEvent(
        transaction_id=msg.transaction_id,
        asset_id=msg.asset_id,
        start_time=msg.start_time,
        status=EventStatus.OPEN,
        received_time=received_at,
        last_activity=msg.timestamp,
        latest_key=(False, -2, msg.timestamp),
    )


def _emits(event: SessionEvent) -> tuple[SessionEvent, tuple[StreamKind, ...]]:
    """The start goes out with the Started message (its power is the start's ChargeW), or with
    the end when the session closes without one; an Updated seen first waits for it."""
    kinds: list[StreamKind] = []
    if not event.start_emitted and (event.saw_started or event.status is not EventStatus.OPEN):
        kinds.append(StreamKind.START)
        event = replace(event, start_emitted=True)
    if event.status is not EventStatus.OPEN and not event.end_emitted:
        kinds.append(StreamKind.END)
        event = replace(event, end_emitted=True)
    return event, tuple(kinds)


def apply(event: SessionEvent | None, msg: Transaction, received_at: datetime) -> Applied:
    """Fold one transaction message into its session's event."""
    before = event
    current = event if event is not None else _new_event(msg, received_at)
    flags = set(current.message_flags | message_flags(msg, received_at))
    if msg.start_time != current.start_time:
        flags.add(Flag.START_TIME_CONFLICT)
    peak = _max(current.peak_power_w, _message_peak(msg))
    is_ended = msg.transaction_state is TransactionState.ENDED
    is_started = msg.transaction_state is TransactionState.STARTED
    updated = replace(
        current,
        received_time=min(current.received_time, received_at),
        last_activity=max(current.last_activity, msg.timestamp, _end_time(msg)),
        peak_power_w=peak,
        start_power_w=(
            current.start_power_w
            if current.start_emitted
            else _message_peak(msg)
            if is_started
            else peak
        ),
        saw_started=current.saw_started or is_started,
    )
    if (
        is_started
        and current.status is not EventStatus.OPEN
        and current.end_time is not None
        and msg.timestamp > current.end_time
    ):
        flags.add(Flag.STARTED_AFTER_CLOSE)
    key = _latest_key(msg)
    if key > updated.latest_key and (updated.status is EventStatus.OPEN or is_ended):
        updated = replace(
            updated,
            latest_key=key,
            energy_wh=msg.ev_energy_wh if msg.ev_energy_wh is not None else updated.energy_wh,
            meter_energy_wh=(
                msg.meter_energy_wh if msg.meter_energy_wh is not None else updated.meter_energy_wh
            ),
            detector_version=msg.detector_version or updated.detector_version,
            confidence=msg.confidence if msg.confidence is not None else updated.confidence,
        )
        if is_ended:
            if updated.status is EventStatus.TIMED_OUT:
                flags.add(Flag.ENDED_AFTER_TIMEOUT)
            updated = replace(
                updated, status=EventStatus.CLOSED, end_time=_end_time(msg), close_reason=None
            )
    updated = replace(updated, message_flags=frozenset(flags))
    updated, kinds = _emits(updated)
    return Applied(updated, kinds, changed=updated != before)


def close_for_timeout(event: SessionEvent, *, reason: str) -> Applied:
    """Close a session that never ended: its end is the last time it was seen active."""
    if event.status is not EventStatus.OPEN:
        return Applied(event, (), changed=False)
    closed = replace(
        event, status=EventStatus.TIMED_OUT, end_time=event.last_activity, close_reason=reason
    )
    closed, kinds = _emits(closed)
    return Applied(closed, kinds, changed=True)
