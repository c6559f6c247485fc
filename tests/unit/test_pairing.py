"""Pairing rules: any order and any repetition of a session's messages give one event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import permutations

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.pairing import (
    EventStatus,
    Flag,
    SessionEvent,
    apply,
    close_for_timeout,
)
from schemas.itron import StreamKind
from schemas.pleevi import Transaction, TransactionState

T0 = datetime(2026, 5, 4, 18, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 5, 5, 12, 0, tzinfo=UTC)


def tx(
    state: TransactionState,
    seq: int,
    minutes: float,
    *,
    stop: float | None = None,
    energy: float | None = None,
    power: float | None = None,
    peak: float | None = None,
    meter: float | None = None,
    start: datetime = T0,
) -> Transaction:
    return Transaction(
        assetId="meter-1",
        transactionId="tx-1",
        timestamp=T0 + timedelta(minutes=minutes),
        transactionState=state,
        startTime=start,
        stopTime=T0 + timedelta(minutes=stop) if stop is not None else None,
        evEnergy=energy,
        evPower=power,
        evPeakPower=peak,
        meterEnergy=meter,
        sequenceNumber=seq,
    )


SESSION = [
    tx(TransactionState.STARTED, 0, 0, power=7200, energy=0),
    tx(TransactionState.SUSPENDED_EV, 1, 60, power=0, energy=7100, peak=7300),
    tx(TransactionState.UPDATED, 2, 75, power=7000, energy=7100, peak=7300),
    tx(TransactionState.ENDED, 3, 150, stop=120, energy=12_000, peak=7400, meter=14_000),
]


def fold(messages: list[Transaction]) -> tuple[SessionEvent, list[StreamKind]]:
    event: SessionEvent | None = None
    emitted: list[StreamKind] = []
    for i, msg in enumerate(messages):
        applied = apply(event, msg, RECEIVED + timedelta(seconds=i))
        event = applied.event
        emitted.extend(applied.emits)
    assert event is not None
    return event, emitted


def essentials(event: SessionEvent) -> tuple[object, ...]:
    return (
        event.status,
        event.start_time,
        event.end_time,
        event.peak_power_w,
        event.energy_wh,
        event.meter_energy_wh,
        event.flags,
        event.saw_started,
    )


def test_in_order_session_becomes_one_closed_event() -> None:
    """Started/SuspendedEV/Updated/Ended fold into the Itron fields."""
    event, emitted = fold(SESSION)
    assert emitted == [StreamKind.START, StreamKind.END]
    assert event.status is EventStatus.CLOSED
    assert event.start_time == T0
    assert event.end_time == T0 + timedelta(minutes=120)  # stopTime, not the Ended timestamp
    assert event.duration_h == 2.0
    assert event.peak_power_w == 7400
    assert event.energy_wh == 12_000
    assert event.start_power_w == 7200
    assert event.received_time == RECEIVED
    assert event.flags == frozenset()


def test_every_order_gives_the_same_event_and_one_start_one_end() -> None:
    """All 24 orders of the four messages give the same event, start and end once each."""
    reference = essentials(fold(SESSION)[0])
    for order in permutations(SESSION):
        event, emitted = fold(list(order))
        assert essentials(event) == reference
        assert sorted(emitted) == sorted([StreamKind.START, StreamKind.END])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(range(len(SESSION))), min_size=1, max_size=12))
def test_any_repetition_and_order_matches_the_set_of_messages(picks: list[int]) -> None:
    """Duplicates and order never matter: the event depends on the set of messages only."""
    chosen = [SESSION[i] for i in picks]
    unique = [SESSION[i] for i in sorted(set(picks))]
    event, emitted = fold(chosen)
    assert essentials(event) == essentials(fold(unique)[0])
    assert emitted.count(StreamKind.START) == (1 if {0, 3} & set(picks) else 0)
    assert emitted.count(StreamKind.END) == (1 if 3 in picks else 0)


def test_the_start_carries_the_started_power_unless_the_ended_overtook_it() -> None:
    """Redelivery can put an Updated before the Started: the start waits for the Started."""
    for order in permutations(SESSION):
        event, emitted = fold(list(order))
        if order.index(SESSION[0]) < order.index(SESSION[3]):
            assert event.start_power_w == 7200, order
        assert emitted.index(StreamKind.START) <= emitted.index(StreamKind.END)


def test_ended_alone_emits_start_and_end() -> None:
    """An Ended with no Started still gives a whole event (and says Started was not seen)."""
    event, emitted = fold([SESSION[3]])
    assert emitted == [StreamKind.START, StreamKind.END]
    assert event.status is EventStatus.CLOSED
    assert not event.saw_started


def test_replayed_old_message_does_not_reopen_or_rewrite() -> None:
    """An old Updated replayed after Ended changes neither status nor energy."""
    event, _ = fold(SESSION)
    later = apply(event, SESSION[2], RECEIVED + timedelta(days=1))
    assert later.emits == ()
    assert later.event.status is EventStatus.CLOSED
    assert later.event.energy_wh == 12_000
    assert later.event.received_time == RECEIVED


def test_second_started_after_close_is_flagged_not_reopened() -> None:
    """A new Started of a closed session's id leaves it closed, with a flag."""
    event, _ = fold(SESSION)
    again = apply(event, tx(TransactionState.STARTED, 4, 300, power=7000), RECEIVED)
    assert again.event.status is EventStatus.CLOSED
    assert again.emits == ()
    assert Flag.STARTED_AFTER_CLOSE in again.event.flags


def test_timeout_closes_with_reason_and_emits_end_once() -> None:
    """An orphan closes at its last activity with a reason; a late Ended is flagged."""
    event, _ = fold(SESSION[:3])
    closed = close_for_timeout(event, reason="no Ended within 48 h")
    assert closed.emits == (StreamKind.END,)
    assert closed.event.status is EventStatus.TIMED_OUT
    assert closed.event.end_time == T0 + timedelta(minutes=75)
    assert closed.event.close_reason == "no Ended within 48 h"
    assert close_for_timeout(closed.event, reason="again").changed is False
    late = apply(closed.event, SESSION[3], RECEIVED)
    assert late.emits == ()
    assert late.event.status is EventStatus.CLOSED
    assert late.event.close_reason is None
    assert Flag.ENDED_AFTER_TIMEOUT in late.event.flags


def test_quality_flags_are_kept_not_fixed() -> None:
    """Energy above the register delta, end before start, future, pre-2000 and negatives."""
    energy = fold([tx(TransactionState.ENDED, 1, 60, stop=60, energy=9000, meter=5000)])[0]
    assert Flag.ENERGY_EXCEEDS_REGISTER in energy.flags
    assert energy.energy_wh == 9000
    backwards = fold([tx(TransactionState.ENDED, 1, 60, stop=-30)])[0]
    assert Flag.END_BEFORE_START in backwards.flags
    assert backwards.duration_h is None
    future = apply(None, tx(TransactionState.STARTED, 0, 0), T0 - timedelta(hours=1)).event
    assert Flag.FUTURE_TIMESTAMP in future.flags
    old = datetime(1999, 12, 31, tzinfo=UTC)
    ancient = fold([tx(TransactionState.STARTED, 0, 0, start=old)])[0]
    assert Flag.BEFORE_2000 in ancient.flags
    negative = fold([tx(TransactionState.ENDED, 1, 60, stop=60, energy=-5)])[0]
    assert Flag.NEGATIVE_VALUE in negative.flags


def test_conflicting_start_time_is_flagged_and_first_kept() -> None:
    """A message that disagrees on startTime keeps the event's start and flags it."""
    other = tx(TransactionState.ENDED, 3, 150, stop=120, start=T0 + timedelta(minutes=5))
    event, _ = fold([SESSION[0], other])
    assert event.start_time == T0
    assert Flag.START_TIME_CONFLICT in event.flags
