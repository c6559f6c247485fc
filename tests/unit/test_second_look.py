"""The second look: charges the live detector missed, found once a day over a meter's last days
by the offline mode, published late as an Ended and its Started; in a running agent, durably and
once, through restarts."""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench.scoring import Interval, score
from edge_agent.agent import EdgeAgent
from edge_agent.detector import DetectorConfig, MeterDetector
from edge_agent.house import House
from edge_agent.metrics import EdgeMetrics
from edge_agent.offline import detect
from edge_agent.second_look import SecondLook, late_sessions
from edge_agent.simulator import HouseholdSpec, Trace, simulate_household
from edge_agent.store import TRANSACTION, AgentStore
from edge_agent.time_of_day import DAY_S
from schemas.pleevi import TransactionState as S


@cache
def hot_house() -> Trace:
    """Ten hot days of a house whose charges stop abruptly: the live detector loses one of its
    six charges among the AC's long afternoon runs; the whole ten days show it."""
    return simulate_household(10, HouseholdSpec(days=10, hot_days=True, abrupt_ends=True)).resample(
        60
    )


def readings(trace: Trace) -> list[tuple[float, float, float | None]]:
    return [(t, p, e) for _, t, p, e in trace.readings()]


def house_at(power_w: float | None) -> House:
    """A house whose live detector knows its charging power (or, None, does not yet)."""
    return House(DetectorConfig(), charging_w=power_w)


def ev_house(trace: Trace) -> House:
    return house_at(trace.sessions[0].level_w)


def datetime_s(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def truth(trace: Trace) -> list[Interval]:
    return [Interval(s.start, s.end, s.energy_wh) for s in trace.sessions]


def test_late_sessions_are_the_offline_modes_not_yet_published_and_settled():
    trace = hot_house()
    rows = readings(trace)
    now = rows[-1][0]
    offline = [tr for tr in detect(trace.readings()) if tr.stop_time is not None]
    assert len(offline) >= 4
    late = late_sessions("meter-10", rows, [], now=now, settle_s=0.0, house=ev_house(trace))
    ended = [tr for tr in late if tr.state is S.ENDED]
    started = [tr for tr in late if tr.state is S.STARTED]
    assert [tr.transaction_id for tr in ended] == [tr.transaction_id for tr in started]
    assert {tr.transaction_id for tr in ended} <= {tr.transaction_id for tr in offline}
    assert len(ended) >= 4
    for begun, end in zip(started, ended, strict=True):
        assert (begun.timestamp, begun.stop_time, begun.sequence_number) == (
            end.start_time,
            None,
            0,
        )
        assert end.sequence_number >= 1
        assert end.ev_energy_wh > 0

    # One published span overlapping a session hides it; the others stay.
    first = ended[0]
    hidden = late_sessions(
        "meter-10",
        rows,
        [(first.start_time + 60, first.start_time + 120)],
        now=now,
        settle_s=0.0,
        house=ev_house(trace),
    )
    assert first.transaction_id not in {tr.transaction_id for tr in hidden}
    assert len(hidden) == len(late) - 2
    # Not yet settled: a session that ended under ``settle_s`` before now waits for a later look.
    last_stop = ended[-1].stop_time
    assert last_stop is not None
    waiting = late_sessions(
        "meter-10",
        rows,
        [],
        now=last_stop + 3600,
        settle_s=7200,
        house=ev_house(trace),
    )
    assert ended[-1].transaction_id not in {tr.transaction_id for tr in waiting}
    # Sessions not at the house's charging power, or with that power unknown, are not sent.
    assert late_sessions("meter-10", rows, [], now=now, settle_s=0.0, house=house_at(None)) == []
    assert late_sessions("meter-10", rows, [], now=now, settle_s=0.0, house=house_at(20_000)) == []


def test_a_meter_is_looked_at_once_a_day_at_its_hour_and_each_session_judged_once():
    trace = hot_house()
    rows = readings(trace)
    look = SecondLook("meter-10", at_s=4 * 3600.0)
    t0 = rows[0][0]  # midnight UTC
    assert not look.due(t0)  # the first reading only sets the first look: 04:00
    assert look.next_at == t0 + 4 * 3600
    assert not look.due(t0 + 4 * 3600 - 60)
    assert look.due(t0 + 4 * 3600)
    # Too few days yet for the offline mode to judge sessions together: nothing, next day.
    assert look.look(rows[: 3 * 1440], t0 + 3 * DAY_S, None, house=ev_house(trace)) == []
    assert look.next_at == t0 + 3 * DAY_S + 4 * 3600

    now = rows[-1][0]
    first = look.look(rows, now, None, house=ev_house(trace))
    assert first
    assert look.next_at == now - now % DAY_S + DAY_S + 4 * 3600
    restored = SecondLook("meter-10")
    restored.restore(json.loads(json.dumps(look.snapshot())))
    assert restored.snapshot() == look.snapshot()
    # Judged once: the next look neither repeats a session nor sends one it judged before.
    assert restored.look(rows, now + DAY_S, None, house=ev_house(trace)) == []


def test_a_meter_read_faster_than_every_30_s_is_left_to_the_live_detector():
    trace = hot_house()
    rows = readings(trace)
    minute, fast = SecondLook("meter-10"), SecondLook("meter-10")
    kept = [m for r in rows for m in minute.keep(*r)]
    assert not minute.fast
    assert kept == rows  # minute readings are kept as they come
    for t, p, e in rows:  # the same power, read every 10 s: kept as the same minute means
        for k in range(6):
            fast.keep(t + 10 * k, p, None if e is None else e + p * k * 10 / 3600)
    assert fast.fast
    now = rows[-1][0]
    assert minute.look(kept, now, None, house=ev_house(trace))
    assert fast.look(kept, now, None, house=ev_house(trace)) == []
    assert fast.judged_to == now - fast.settle_s  # judged: a later look does not send them


def agent_on(store: AgentStore, registry: CollectorRegistry | None = None, **kw) -> EdgeAgent:
    metrics = EdgeMetrics(registry or CollectorRegistry())
    return EdgeAgent(site_id="s", store=store, metrics=metrics, **kw)


def agent_transactions(
    store_path: Path, rows, *, stop_after: int | None = None
) -> tuple[list[dict], float]:
    """The transaction messages a running agent queues for meter "meter-10"'s ``rows``, and
    its count of late sessions; restarted (a new agent on the same store) after
    ``stop_after`` readings if given."""
    parts = [rows] if stop_after is None else [rows[:stop_after], rows]  # a replay after restart
    counted = 0.0
    for part in parts:
        store, registry = AgentStore(store_path), CollectorRegistry()
        try:
            agent_on(store, registry).process(("meter-10", t, p, e) for t, p, e in part)
            counted += registry.get_sample_value("ev_edge_second_look_sessions_total") or 0.0
        finally:
            store.close()
    store = AgentStore(store_path)
    try:
        queued = store.pending(0, 100_000)
    finally:
        store.close()
    return [json.loads(q.payload) for q in queued if q.kind == TRANSACTION], counted


def test_a_running_agent_publishes_late_the_charge_its_live_detector_missed(tmp_path):
    trace = hot_house()
    rows = readings(trace)
    live = MeterDetector("meter-10", warms_up=True)
    live_ended = [tr for r in rows for tr in live.update(*r) if tr.state is S.ENDED]
    live_score = score(
        truth(trace), [Interval(tr.start_time, tr.stop_time or 0, 0) for tr in live_ended]
    )

    sent, counted = agent_transactions(tmp_path / "agent.sqlite3", rows)
    ended = [m for m in sent if m["transactionState"] == "Ended"]
    late = [m for m in ended if m["transactionId"] not in {tr.transaction_id for tr in live_ended}]
    assert late, "the second look found nothing the live detector missed"
    assert counted == len(late)
    for m in late:  # each late session whole, its Ended first (an orphan is a Started alone)
        started = [s for s in sent if s["transactionId"] == m["transactionId"]]
        assert [s["transactionState"] for s in started] == ["Ended", "Started"]
    spans = [
        Interval(*(datetime_s(m[k]) for k in ("startTime", "stopTime")), m["evEnergy"])
        for m in ended
    ]
    with_look = score(truth(trace), spans)
    assert with_look.matched > live_score.matched
    assert with_look.f1 > live_score.f1

    # Restarted mid-trace (just before the late session's look) and replayed from the start:
    # the same messages, none repeated, none lost.
    look_at = min(datetime_s(m["timestamp"]) for m in late)
    stop_after = next(i for i, r in enumerate(rows) if r[0] > look_at) - 5
    again, _ = agent_transactions(tmp_path / "restarted.sqlite3", rows, stop_after=stop_after)
    key = lambda m: (m["transactionId"], m["sequenceNumber"], m["transactionState"])  # noqa: E731
    assert sorted(map(key, again)) == sorted(map(key, sent))
    assert len(set(map(key, again))) == len(again)


def test_an_agent_without_the_second_look_sends_only_the_live_detectors_sessions(tmp_path):
    trace = hot_house()
    rows = readings(trace)
    store = AgentStore(tmp_path / "off.sqlite3")
    try:
        agent_on(store, second_look_days=0).process(("meter-10", t, p, e) for t, p, e in rows)
        assert store.retained("meter-10", 0.0) == []
        sent = {
            json.loads(q.payload)["transactionId"]
            for q in store.pending(0, 100_000)
            if q.kind == TRANSACTION
        }
    finally:
        store.close()
    live = MeterDetector("meter-10", warms_up=True)
    assert sent == {tr.transaction_id for r in rows for tr in live.update(*r)}


def test_a_look_forgets_the_kept_readings_past_its_days_of_every_meter(tmp_path):
    """A meter that stopped reporting keeps nothing past the second look's days: another
    meter's look forgets its readings too."""
    trace = hot_house()
    rows = readings(trace)
    store = AgentStore(tmp_path / "agent.sqlite3")
    try:
        agent = agent_on(store, second_look_days=7)
        agent.process(("gone", t, p, e) for t, p, e in rows[:1440])  # one day, then silence
        assert len(store.retained("gone", 0.0)) == 1440
        agent.process(("meter-10", t + 2 * DAY_S, p, e) for t, p, e in rows)
        assert store.retained("gone", 0.0) == []
        kept = store.retained("meter-10", 0.0)
        assert kept[0][0] >= rows[-1][0] + 2 * DAY_S - 8 * DAY_S
    finally:
        store.close()
