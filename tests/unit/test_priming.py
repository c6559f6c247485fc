"""A gateway primed with its meters' history (``edge_agent.priming``, ``EDGE_HISTORY``): a
meter met for the first time starts knowing its house instead of learning it over a week."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edge_agent.agent import EdgeAgent
from edge_agent.detector import MeterDetector, Phase
from edge_agent.metrics import EdgeMetrics
from edge_agent.priming import primed, primed_meters
from edge_agent.service import primed_from_history
from edge_agent.settings import EdgeSettings
from edge_agent.store import TRANSACTION, AgentStore
from schemas.pleevi import Measurement
from schemas.pleevi import TransactionState as S
from tests.unit.test_offline import ac_around_a_charge, minutes, write_csv

DAY_MIN = 1440


def from_history(settings: EdgeSettings) -> dict[str, MeterDetector]:
    return primed_from_history(settings, settings.detector_config())


def nightly_charge(m: int) -> float:
    """A 3.6 kW charge from 01:00 to 03:00 every night: the house's EV."""
    return 3600.0 if 60 <= m % DAY_MIN < 180 else 0.0


def week_then_the_ac_day(m: int) -> float:
    """Six days of nightly charges (the history), then the day of ``ac_around_a_charge``."""
    return nightly_charge(m) if m < 6 * DAY_MIN else ac_around_a_charge(m - 6 * DAY_MIN)


def rows_of(hours: float, load) -> list[tuple[float, float, float]]:
    return [(t.timestamp(), p, e) for t, p, e in minutes(hours, load)]


def transitions(det: MeterDetector, rows) -> list:
    out = [tr for t, p, e in rows for tr in det.update(t, p, e)]
    return out + det.finish()


def test_a_meter_primed_with_its_history_keeps_a_charge_a_cold_one_loses():
    """The AC day's charge, within a quarter of the AC's size, is held to the cycler rule by a
    detector that does not know the house's charging power, and lost when the AC's next cycle
    follows it. Primed with the six nights before (its EV at 3.6 kW each night), the detector
    meets the meter knowing that power and keeps the charge. Control: met cold on the AC day."""
    rows = rows_of(7 * 24, week_then_the_ac_day)
    history, live = rows[: 6 * DAY_MIN], rows[6 * DAY_MIN :]
    cold = transitions(MeterDetector("m", warms_up=True), live)
    assert [tr for tr in cold if tr.state is S.ENDED] == []
    det = primed("m", history)
    assert det.house.charging_w == pytest.approx(3600, rel=0.03)
    assert det.phase is Phase.IDLE
    assert det.last_t is None  # it follows the live readings from the first
    ended = [tr for tr in transitions(det, live) if tr.state is S.ENDED]
    assert [(tr.start_time, tr.stop_time) for tr in ended] == [
        (pytest.approx(live[840][0], abs=120), pytest.approx(live[940][0], abs=120))
    ]
    assert ended[0].ev_energy_wh == pytest.approx(3600 * 100 / 60, rel=0.1)


def test_a_history_that_ends_mid_charge_sends_nothing_of_it():
    """The history's last charge is still on at its end: nothing of it is published (the
    primed detector keeps only what it learnt of the house) and no session ends without a
    start. As for an agent meeting any meter mid-charge, that charge is not seen rising; the
    next night's is found whole."""
    rows = rows_of(8 * 24, nightly_charge)
    cut = 6 * DAY_MIN + 120  # 02:00 on the seventh night, an hour into its charge
    out = transitions(primed("m", rows[:cut]), rows[cut:])
    sessions = [tr for tr in out if tr.state in (S.STARTED, S.ENDED)]
    assert [tr.state for tr in sessions] == [S.STARTED, S.ENDED]
    assert sessions[0].start_time == pytest.approx(rows[7 * DAY_MIN + 60][0], abs=120)


def history_lines(meter: str, load) -> list[str]:
    return [
        Measurement(assetId=meter, timestamp=t, energyValue=e, powerValue=p).model_dump_json(
            by_alias=True
        )
        for t, p, e in minutes(6 * 24, load)
    ]


@pytest.mark.parametrize("layout", ["one after another", "interleaved"])
def test_every_meter_of_a_history_file_is_primed(tmp_path, layout):
    """A Pleevi JSON Lines history of two meters, one meter's readings after the other's or
    interleaved as a gateway logs them: each is primed from its own readings."""
    a, b = history_lines("meter-a", nightly_charge), history_lines("meter-b", lambda m: 0.0)
    lines = (
        a + b
        if layout == "one after another"
        else [x for pair in zip(a, b, strict=True) for x in pair]
    )
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    meters = from_history(EdgeSettings(history=path))
    assert sorted(meters) == ["meter-a", "meter-b"]
    assert meters["meter-a"].house.charging_w == pytest.approx(3600, rel=0.03)
    assert meters["meter-b"].house.charging_w is None
    assert primed_meters(list) == {}


def test_a_history_out_of_time_order_is_skipped_as_a_running_agent_skips_it(tmp_path, caplog):
    """Readings stream through the live detector (a long history is never held whole): a
    meter's readings out of time order are skipped as it skips them, and the meter is named
    with their count. Its sessions then agree on no power, and the offline mode, which reads
    each meter in time order, judges its history whole: the house's charging power is still
    learnt."""
    lines = history_lines("meter-a", nightly_charge)
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="edge_agent.priming"):
        meters = from_history(EdgeSettings(history=path))
    assert f"history of meter-a: {len(lines) - 1} readings out of time order" in caplog.text
    assert meters["meter-a"].house.charging_w == pytest.approx(3600, rel=0.03)
    live_alone = MeterDetector("meter-a", warms_up=True)  # the control: the live replay only
    for t, p, e in reversed(rows_of(6 * 24, nightly_charge)):
        live_alone.update(t, p, e)
    assert live_alone.house.charging_w is None


def test_a_history_that_cannot_be_read_stops_the_agent_naming_it(tmp_path):
    path = write_csv(
        tmp_path / "m.csv", minutes(2, nightly_charge), lambda t: t.strftime("%Y-%m-%d %H:%M")
    )
    with pytest.raises(SystemExit, match=r"EDGE_HISTORY .*m\.csv.*offset"):
        from_history(EdgeSettings(history=path))
    with pytest.raises(SystemExit, match="EDGE_HISTORY"):
        from_history(EdgeSettings(history=tmp_path / "missing.csv"))
    assert from_history(EdgeSettings()) == {}


def agent_ended(store_path: Path, rows, primed_meters: dict[str, MeterDetector]) -> list[dict]:
    """The Ended messages an agent given ``primed_meters`` queues for meters "m" and "n" (the
    same readings), and checks its count of meters met primed and cold."""
    store, registry = AgentStore(store_path), CollectorRegistry()
    try:
        agent = EdgeAgent(
            site_id="s", store=store, metrics=EdgeMetrics(registry), primed=primed_meters
        )
        agent.process((meter, t, p, e) for t, p, e in rows for meter in ("m", "n"))
        queued = store.pending(0, 100_000)
    finally:
        store.close()
    met = {
        start: registry.get_sample_value("ev_edge_meters_met_total", {"start": start})
        for start in ("primed", "cold")
    }
    assert met == {"primed": len(primed_meters), "cold": 2 - len(primed_meters)}
    messages = [json.loads(q.payload) for q in queued if q.kind == TRANSACTION]
    return [m for m in messages if m["transactionState"] == "Ended" and m["assetId"] == "m"]


def test_a_running_agent_uses_a_primed_detector_only_for_a_meter_new_to_it(tmp_path):
    """The agent primed with the six nights keeps the AC day's charge; an agent that already
    followed the meter (its saved state) keeps what it knows and ignores the history."""
    rows = rows_of(7 * 24, week_then_the_ac_day)
    history, live = rows[: 6 * DAY_MIN], rows[6 * DAY_MIN :]
    assert agent_ended(tmp_path / "cold.sqlite3", live, {}) == []
    [ended] = agent_ended(tmp_path / "primed.sqlite3", live, {"m": primed("m", history)})
    assert ended["startTime"] == "2024-07-09T14:00:00Z"
    # A restart on the same store: the meter's saved state wins over a history given now.
    store = AgentStore(tmp_path / "primed.sqlite3")
    try:
        other = MeterDetector("m")
        agent = EdgeAgent(
            site_id="s", store=store, metrics=EdgeMetrics(CollectorRegistry()), primed={"m": other}
        )
        assert agent.detectors["m"] is not other
        assert agent.detectors["m"].house.charging_w == pytest.approx(3600, rel=0.03)
    finally:
        store.close()
