"""Household simulator: labelled truth, register, and the optional extras' independence."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.simulator import DAY_S, HouseholdSpec, _variable_speed_draw, simulate_household


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


@pytest.mark.parametrize("extra", ["solar", "pool", "hot_days", "two_acs", "variable_speed_ac"])
def test_extras_keep_the_same_house_and_sessions(extra):
    """Solar, pool pumps, hot days, second ACs and variable-speed heat pumps draw from their own
    generators: the same seed keeps its EV sessions, so a benchmark with and without them
    compares the same households."""
    seed = 6 if extra in ("two_acs", "variable_speed_ac") else 9  # houses that get them
    plain = simulate_household(seed, HouseholdSpec(days=4, step_s=60))
    more = simulate_household(seed, HouseholdSpec(days=4, step_s=60, **{extra: True}))
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


def _house_w(trace) -> np.ndarray:
    assert trace.ev_power_w is not None
    return trace.power_w - trace.ev_power_w


def test_a_second_ac_cycles_at_a_size_of_its_own():
    """With two ACs, seed 2's house has an upper floor's AC: its extra draw comes in cycles
    of one size (1.8-3.2 kW), switching on in steps, on most days."""
    spec = HouseholdSpec(days=4, step_s=60)
    extra = _house_w(simulate_household(2, HouseholdSpec(days=4, step_s=60, two_acs=True)))
    extra -= _house_w(simulate_household(2, spec))
    on = extra > 500
    assert 1800 * 0.9 < float(np.median(extra[on])) < 3200 * 1.2
    switched_on = np.flatnonzero(on[1:] & ~on[:-1])
    assert len(switched_on) >= 8
    per_day = DAY_S // 60
    assert len({int(i) // per_day for i in switched_on}) >= 3


def test_a_variable_speed_heat_pump_ramps_instead_of_stepping():
    """A variable-speed heat pump draws kilowatts for hours of the afternoon, but its speed
    changes by at most 10% of rated a minute (plus 1% noise): never the step a charger or a
    single-speed compressor makes; under its lowest speed it cycles there (30% of rated)."""
    rated = 3500.0
    draw = _variable_speed_draw(np.random.default_rng(1), 14 * 60, 9 * 60, rated, 60)
    afternoon, night = draw[60 : 9 * 60], draw[10 * 60 :]
    assert np.median(afternoon) > 0.5 * rated
    running = (draw[1:] > 0) & (draw[:-1] > 0)
    assert np.abs(np.diff(draw))[running].max() < 0.14 * rated
    steps = np.diff((draw > 0).astype(int))
    assert (steps == 1).sum() >= 2  # it cycles at its lowest speed in the night
    assert draw[draw > 0].min() > 0.25 * rated
    assert night.mean() < afternoon.mean()


def test_a_house_with_a_variable_speed_heat_pump_has_fewer_compressor_steps():
    """Seed 0's house with a variable-speed heat pump instead of its cycling AC: the same
    house, with far fewer rises of 2.5 kW within two minutes (the compressor's cycles)."""

    def rises(trace) -> int:
        house = _house_w(trace)
        return int((house[2:] - np.minimum(house[:-2], house[1:-1]) >= 2500).sum())

    cycling = simulate_household(0, HouseholdSpec(days=4, step_s=60))
    modulating = simulate_household(0, HouseholdSpec(days=4, step_s=60, variable_speed_ac=True))
    assert rises(modulating) < rises(cycling) / 2


def test_a_trace_since_an_instant_is_what_an_agent_meeting_the_meter_then_sees():
    trace = simulate_household(3, HouseholdSpec(days=4, step_s=60))
    met = float(trace.times[0]) + 2 * DAY_S + 30.0  # between two readings
    later = trace.since(met)
    assert later.times[0] >= met
    assert len(later.times) == np.count_nonzero(trace.times >= met)
    assert later.sessions == [s for s in trace.sessions if s.start >= met]
    assert later.sessions  # the control: the house charged in those days
    assert later.power_w[0] == trace.power_w[len(trace.times) - len(later.times)]
