"""Fast readings averaged into interval means before the detector judges them."""

from __future__ import annotations

import pytest

from edge_agent.detector import MeterDetector
from edge_agent.interval_mean import IntervalMean
from tests.unit.test_detector import T0, run, states, trace, window


def test_one_second_readings_become_ten_second_means_labelled_at_their_first_reading():
    means = IntervalMean(10.0)
    out = []
    for i in range(25):
        out += means.add(T0 + i, 100.0 + i, 5000.0 + i)
    assert out == [(T0, 104.5, 5000.0), (T0 + 10, 114.5, 5010.0)]
    assert means.flush() == [(T0 + 20, 122.0, 5020.0)]
    assert means.flush() == []


def test_minute_readings_pass_straight_through_after_the_first():
    """A meter read every minute is judged on its own readings, none held back a minute
    (the first waits for the second: only then is the meter's pace known)."""
    means = IntervalMean(10.0)
    assert means.add(T0, 300.0, 1.0) == []
    assert means.add(T0 + 60, 400.0, 2.0) == [(T0, 300.0, 1.0), (T0 + 60, 400.0, 2.0)]
    assert means.add(T0 + 120, 500.0, None) == [(T0 + 120, 500.0, None)]
    assert means.flush() == []


def test_a_meter_that_slows_down_has_its_filling_interval_flushed_first():
    means = IntervalMean(10.0)
    out = means.add(T0, 100.0, None) + means.add(T0 + 1, 200.0, None)
    out += means.add(T0 + 60, 900.0, None)
    assert out == [(T0, 150.0, None), (T0 + 60, 900.0, None)]


def test_a_restart_mid_interval_loses_and_repeats_no_reading():
    """A snapshot taken with a mean half filled, restored: the readings after it continue that
    mean, a reading replayed from before it is skipped, and the session ends once, as in an
    uninterrupted run."""
    readings = trace(1, 5, window(1, 3, 3500))
    _, whole = run(readings)
    det, first = run(readings[: 2 * 3600 + 5])  # 5 s into a 10 s mean, mid-session
    restored = MeterDetector.restore(det.snapshot())
    assert restored.seen_t == readings[2 * 3600 + 4][0]
    assert restored.update(*readings[2 * 3600]) == []  # already seen: skipped
    _, rest = run(readings[2 * 3600 + 5 :], detector=restored)
    assert states(first + rest) == states(whole)
    assert rest[-1].transaction_id == whole[-1].transaction_id
    assert rest[-1].ev_energy_wh == pytest.approx(whole[-1].ev_energy_wh, rel=1e-9)
    assert rest[-1].ev_energy_wh == pytest.approx(7000, rel=0.03)
