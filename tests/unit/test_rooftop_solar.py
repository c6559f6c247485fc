"""The panels' output behind a net meter, estimated from its lows (``rooftop_solar``), and
the offline mode finding charges as in a house without panels once it is added back."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from edge_agent.agent import EdgeAgent
from edge_agent.detector import DetectorConfig, MeterDetector
from edge_agent.metrics import EdgeMetrics
from edge_agent.offline import detect
from edge_agent.rooftop_solar import panel_output
from edge_agent.store import AgentStore
from schemas.pleevi import TransactionState

DAY0 = 1_719_792_000.0  # 2024-07-01 00:00 UTC
DAYS = 8


def clear_sky(t: np.ndarray, noon_utc_h: float, peak_w: float = 4500.0) -> np.ndarray:
    """A clear summer day's output, 13 h of sun around ``noon_utc_h``."""
    hour = ((t - DAY0) / 3600.0 - noon_utc_h + 6.5) % 24.0
    return peak_w * np.clip(np.sin(hour / 13.0 * math.pi), 0.0, None) ** 1.3 * (hour < 13.0)


def ac(t: np.ndarray, noon_utc_h: float) -> np.ndarray:
    """A 3.5 kW AC cycling (30 min on, 15 off, each day from another minute) from an hour
    before solar noon to ten after, and on every other day running through the 2 h after
    noon: the house's low at those hours shows on the other days only."""
    day = (t - DAY0) // 86_400
    since = ((t - DAY0) / 3600.0 - noon_utc_h + 1.0) % 24.0
    cycling = (since < 11.0) & ((since * 60.0 + 11.0 * day) % 45.0 < 30.0)
    through = (since >= 1.0) & (since < 3.0) & (day % 2 == 0)
    return 3500.0 * (cycling | through)


def house(noon_utc_h: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A week of minute readings: time, the house's own load, the panels' output."""
    t = DAY0 + 60.0 * np.arange(DAYS * 1440)
    load = 400.0 + 20.0 * np.sin(np.arange(len(t))) + ac(t, noon_utc_h)
    return t, load, clear_sky(t, noon_utc_h)


def import_register(power: np.ndarray) -> np.ndarray:
    """A net meter's import register (Wh) over minute readings: it counts imports only."""
    register: np.ndarray = 1_000_000.0 + np.cumsum(np.clip(power, 0.0, None)) / 60.0
    return register


@pytest.mark.parametrize("noon_utc_h", [13.0, 19.0])  # 19:00: an American house, over midnight UTC
def test_the_panels_output_is_the_hump_under_the_houses_lows(noon_utc_h):
    """Over a week of a net meter's readings the estimate follows the panels' output within
    a few percent of their peak, though the AC runs through the same hours every afternoon,
    and wherever the meter's time zone puts the sun in the UTC day."""
    t, load, sun = house(noon_utc_h)
    found = panel_output(t, load - sun, export_w=100.0, min_peak_w=600.0)
    assert found is not None
    assert np.max(np.abs(found - sun)) < 0.06 * 4500.0
    assert np.max(np.abs(found[sun == 0])) < 150.0  # nothing added at night
    # Empty readings (a gap's) are no lows, and an estimate is made at them too.
    net = load - sun
    net[::97] = np.nan
    gappy = panel_output(t, net, export_w=100.0, min_peak_w=600.0)
    assert gappy is not None
    assert np.all(np.isfinite(gappy))
    assert np.max(np.abs(gappy - sun)) < 0.06 * 4500.0


def test_a_stray_timestamp_years_away_is_one_more_day_not_years_of_them():
    t, load, sun = house(13.0)
    stray_t = np.concatenate([[DAY0 - 20 * 365 * 86_400.0], t])
    stray_p = np.concatenate([[400.0], load - sun])
    found = panel_output(stray_t, stray_p, export_w=100.0, min_peak_w=600.0)
    assert found is not None
    assert np.max(np.abs(found[1:] - sun)) < 0.06 * 4500.0


def test_a_meter_that_never_exports_has_no_panels():
    t, load, _ = house(13.0)
    assert panel_output(t, load, export_w=100.0, min_peak_w=600.0) is None


def test_with_panels_a_charge_under_the_acs_cycles_is_found_as_without(caplog):
    """On the week's last day a 3.6 kW charge begins at 15:25 while the AC runs, and goes on
    past sunset while the AC cycles on and off beside it. Under the net power, whose floor
    fell from an export while the sun faded, the AC's first stop looked like the charge's.
    With the panels' output added back the charge is followed as behind a meter without
    panels. Control: the same house without panels."""
    t, load, sun = house(13.0)
    charging = (t >= DAY0 + (DAYS - 1) * 86_400 + 15.42 * 3600) & (
        t < DAY0 + (DAYS - 1) * 86_400 + 19.0 * 3600
    )
    load = load + 3600.0 * charging

    def sessions(power: np.ndarray) -> list[tuple[float, float, float]]:
        energy = import_register(power)
        readings = [
            ("m", float(a), float(p), float(e)) for a, p, e in zip(t, power, energy, strict=True)
        ]
        return [(s.start_time, s.stop_time or 0.0, s.ev_energy_wh) for s in detect(readings)]

    without = sessions(load)
    assert len(without) == 1  # the control
    with caplog.at_level(logging.INFO, logger="edge_agent.offline"):
        [(start, stop, energy)] = sessions(load - sun)
    assert "m: rooftop PV behind the meter" in caplog.text  # said, for whoever reads the log
    assert start == pytest.approx(without[0][0], abs=120)
    assert stop == pytest.approx(without[0][1], abs=120)
    assert energy == pytest.approx(3600.0 * 3.58, rel=0.05)


def live_sessions(
    t: np.ndarray, power: np.ndarray, *, adds_back_panels: bool = True
) -> list[tuple[float, float, float]]:
    """The sessions a running agent's detector ends, reading by reading."""
    det = MeterDetector("m", DetectorConfig(), adds_back_panels=adds_back_panels)
    energy = import_register(power)
    ended = [
        tr
        for a, p, e in zip(t, power, energy, strict=True)
        for tr in det.update(float(a), float(p), float(e))
        if tr.state is TransactionState.ENDED
    ]
    return [(s.start_time, s.stop_time or 0.0, s.ev_energy_wh) for s in ended + det.finish()]


def test_a_running_agent_learns_the_panels_from_its_last_days_and_starts_at_night():
    """Reading by reading, nothing is added until a day's lows are known and a night's middle
    has come (a new estimate starts where the panels give nothing: no step); from then on the
    estimate follows the panels, and it survives a restart from the detector's snapshot."""
    t, load, sun = house(13.0)
    net = load - sun
    det = MeterDetector("m", DetectorConfig())
    never_stopped = MeterDetector("m", DetectorConfig())
    panels = det.house.panels
    added, estimating, unbroken = [], [], []
    for k, (a, p) in enumerate(zip(t, net, strict=True)):
        if k == 3 * 1440:  # a restart on the fourth day
            state = json.loads(json.dumps(det.snapshot()))
            det = MeterDetector.restore(state, DetectorConfig())
            panels = det.house.panels
        det.update(float(a), float(p), None)
        never_stopped.update(float(a), float(p), None)
        added.append(panels.at(float(a)))
        unbroken.append(never_stopped.house.panels.at(float(a)))
        estimating.append(panels.output is not None)
    assert added == unbroken  # restored, it adds back what it would have
    added_w = np.array(added)
    assert not any(estimating[:1440])  # the first day's lows first
    began = estimating.index(True)
    assert sun[began] == 0.0  # at night
    assert added_w[began] == 0.0
    third = (t >= DAY0 + 2 * 86_400) & (t < DAY0 + 3 * 86_400)
    assert np.max(np.abs(added_w[third] - sun[third])) < 0.1 * 4500.0  # two days' lows
    later = t >= DAY0 + 3 * 86_400
    assert np.max(np.abs(added_w[later] - sun[later])) < 0.06 * 4500.0
    assert np.max(np.abs(np.diff(added_w))) < 200.0  # no step a minute


def test_a_running_agent_with_panels_finds_a_charge_under_the_acs_cycles_as_without():
    """The offline test's case (above), reading by reading: the agent adds back what it learnt
    of the panels on the week's first days. Controls: the same house without panels; with
    panels, not adding them back loses the charge."""
    t, load, sun = house(13.0)
    day = DAY0 + (DAYS - 1) * 86_400
    load = load + 3600.0 * ((t >= day + 15.42 * 3600) & (t < day + 19.0 * 3600))
    without = [s for s in live_sessions(t, load) if s[0] >= day]
    assert len(without) == 1  # the control
    [(start, stop, energy)] = [s for s in live_sessions(t, load - sun) if s[0] >= day]
    assert start == pytest.approx(without[0][0], abs=120)
    assert stop == pytest.approx(without[0][1], abs=120)
    assert energy == pytest.approx(3600.0 * 3.58, rel=0.05)
    lost = live_sessions(t, load - sun, adds_back_panels=False)
    assert not [s for s in lost if abs(s[0] - start) < 1800 and abs(s[1] - stop) < 1800]


def test_an_operator_sees_how_many_meters_have_their_panels_added_back(tmp_path):
    """``ev_edge_meters_with_panels``: a net meter that exports counts once its estimate is
    made (after its first night); one without panels never does."""
    t, load, sun = house(13.0)
    three_days = t < DAY0 + 3 * 86_400
    store, registry = AgentStore(tmp_path / "agent.sqlite3"), CollectorRegistry()
    try:
        agent = EdgeAgent(site_id="s", store=store, metrics=EdgeMetrics(registry))
        gauge = []
        for day in range(3):
            part = three_days & ((t - DAY0) // 86_400 == day)
            agent.process(
                (meter, float(a), float(p), None)
                for a, own, gave in zip(t[part], load[part], sun[part], strict=True)
                for meter, p in (("sun", own - gave), ("plain", own))
            )
            gauge.append(registry.get_sample_value("ev_edge_meters_with_panels"))
    finally:
        store.close()
    assert gauge == [0.0, 1.0, 1.0]
