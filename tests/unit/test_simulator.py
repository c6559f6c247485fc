"""Household simulator: labelled truth, register, and the optional extras' independence."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.simulator import DAY_S, HouseholdSpec, simulate_household


@pytest.mark.parametrize("seed", [0, 9])
def test_truth_energy_is_the_ev_power_in_each_session(seed):
    trace = simulate_household(seed, HouseholdSpec(days=5, step_s=60))
    assert trace.sessions
    assert trace.ev_power_w is not None
    for session in trace.sessions:
        inside = (trace.times >= session.start) & (trace.times < session.end)
        assert trace.ev_power_w[inside].sum() / 60 == pytest.approx(session.energy_wh, rel=0.01)


def test_register_is_cumulative_and_counts_what_the_power_says():
    trace = simulate_household(3, HouseholdSpec(days=3, step_s=60))
    steps = np.diff(trace.energy_wh)
    assert (steps >= 0).all()
    assert steps.sum() == pytest.approx(trace.power_w[:-1].clip(min=0).sum() / 60, rel=1e-6)


@pytest.mark.parametrize("extra", ["solar", "pool", "hot_days"])
def test_extras_keep_the_same_house_and_sessions(extra):
    """Solar, pool pumps and hot days draw from their own generators: the same seed keeps its
    EV sessions, so a benchmark with and without them compares the same households."""
    plain = simulate_household(9, HouseholdSpec(days=4, step_s=60))
    more = simulate_household(9, HouseholdSpec(days=4, step_s=60, **{extra: True}))
    assert more.sessions == plain.sessions
    assert not np.array_equal(more.power_w, plain.power_w)


def test_a_pool_pump_starts_at_one_time_every_day():
    """Seed 9's house has a pool pump (about 2.1 kW from about 07:00): the extra load steps on
    within minutes of the same time of day, every day."""
    spec = HouseholdSpec(days=4, step_s=60)
    pump = (
        simulate_household(9, HouseholdSpec(days=4, step_s=60, pool=True)).power_w
        - simulate_household(9, spec).power_w
    )
    per_day = DAY_S // 60
    starts = [int(np.argmax(pump[d * per_day : (d + 1) * per_day] > 1000)) for d in range(4)]
    assert max(starts) - min(starts) <= 6
    assert 1000 < float(np.median(pump[pump > 500])) < 2300


def test_on_hot_days_the_ac_runs_through_the_afternoon():
    """With hot days, half the days of a hot-climate house have an AC run of 2-5 h without a
    break, on top of what the same house does without them (the EV's power taken out)."""

    def longest_ac_runs_h(trace) -> list[float]:
        house = trace.power_w - trace.ev_power_w
        per_day = DAY_S // 60
        out = []
        for d in range(len(house) // per_day):
            # The AC (2.5-4 kW) above the day's quietest hour: a run is a stretch above 2 kW.
            day = house[d * per_day : (d + 1) * per_day]
            above = day - np.convolve(day, np.ones(60) / 60, "same").min() > 2000
            longest = run = 0
            for flag in above:
                run = run + 1 if flag else 0
                longest = max(longest, run)
            out.append(longest / 60)
        return out

    spec = HouseholdSpec(days=8, step_s=60)
    plain = longest_ac_runs_h(simulate_household(0, spec))
    hot = longest_ac_runs_h(simulate_household(0, HouseholdSpec(days=8, step_s=60, hot_days=True)))
    assert sum(h >= 2 for h in hot) >= sum(h >= 2 for h in plain) + 2
    assert all(h >= p for h, p in zip(hot, plain, strict=True))


def test_abrupt_ends_stop_each_charge_within_minutes_in_the_same_house():
    """With abrupt ends every charge winds down in at most 5 min (a charge limit) where the
    default tapers for 10-40 min; the house and the sessions' starts and levels stay the same."""

    def wind_down_min(trace, session) -> float:
        inside = (trace.times >= session.start) & (trace.times < session.end)
        ev = trace.ev_power_w[inside]
        below = np.flatnonzero(ev >= 0.9 * session.level_w)
        return (len(ev) - 1 - below[-1]) if len(below) else float("inf")

    spec = HouseholdSpec(days=6, step_s=60)
    plain = simulate_household(9, spec)
    abrupt = simulate_household(9, HouseholdSpec(days=6, step_s=60, abrupt_ends=True))
    assert np.allclose(abrupt.power_w - abrupt.ev_power_w, plain.power_w - plain.ev_power_w)
    assert [(s.start, s.level_w) for s in abrupt.sessions] == [
        (s.start, s.level_w) for s in plain.sessions
    ]
    assert all(wind_down_min(abrupt, s) <= 5 for s in abrupt.sessions)
    assert min(wind_down_min(plain, s) for s in plain.sessions) >= 9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_house_keeps_one_ac_from_day_to_day(seed):
    """A house has one AC compressor: its night cycles draw about the same power every day
    (the weather moves it a few percent; a fresh 2.5-4 kW draw each day would not)."""
    days = 10
    trace = simulate_household(seed, HouseholdSpec(days=days, step_s=60, hot_climate=True))
    assert trace.ev_power_w is not None
    house = trace.power_w - trace.ev_power_w
    elapsed = trace.times - trace.times[0]
    night = elapsed % DAY_S < 5 * 3600
    compressor = night & (house > 2200) & (house < 5000)
    daily = [np.median(house[compressor & (elapsed // DAY_S == d)]) for d in range(1, days)]
    assert max(daily) / min(daily) < 1.2
