"""Held layers: a charge under other loads, found over the whole file (pure core)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.held_layers import (
    Cycler,
    Layer,
    held_layers,
    layer_begun_before,
    lost_charges,
    rises_of_size,
    rose_at,
)

DAY = 86_400.0
HOUR = 3_600.0


def layers_of(
    powers: list[float] | np.ndarray,
    times: np.ndarray | None = None,
    max_gap_s: float = 20 * 60.0,
    level: float = 3_600.0,
    cycler: Cycler | None = None,
) -> list[Layer]:
    """The layers of a 3.6 kW EV's size (within 15%), readings a minute apart unless ``times``."""
    watts = np.asarray(powers, dtype=np.float64)
    if times is None:
        times = np.arange(len(watts), dtype=np.float64) * 60.0
    rises = rises_of_size(watts, level, 0.15)
    return held_layers(
        times,
        watts,
        level,
        rises,
        floor_s=HOUR,
        max_gap_s=max_gap_s,
        max_s=36 * HOUR,
        export_w=100.0,
        cycler=cycler,
    )


def ac_and_charge(
    m: int, charge_from: int = 145, charge_min: int = 180, ac_w: float = 3_500.0
) -> float:
    """400 W of house, an AC (3.5 kW) cycling 20 min on and 10 off, and a 3.6 kW charge that
    rises and ends in the AC's off times."""
    ac = ac_w if m % 30 < 20 else 0.0
    ev = 3_600.0 if charge_from <= m < charge_from + charge_min else 0.0
    return 400.0 + ac + ev


def test_a_charge_under_an_acs_cycles_is_one_layer_from_its_rise_to_its_end():
    """The AC's off times dip to the house plus the EV, never to the house's floor: the
    charge is one layer, its energy the EV's alone. The AC's runs around it are layers too,
    each as long as its run."""
    layers = layers_of([ac_and_charge(m) for m in range(600)])
    (charge,) = [layer for layer in layers if layer.lasted > HOUR]
    assert charge.start == 145 * 60.0
    assert charge.stop == 325 * 60.0
    assert charge.ev_energy_wh == pytest.approx(3_600.0 * 3, rel=0.02)
    assert {layer.lasted for layer in layers if layer is not charge} == {20 * 60.0}


@pytest.mark.parametrize(("export_w", "layers"), [(3_000.0, 0), (100.0, 0), (5_000.0, 1)])
def test_no_layer_rises_from_an_export(export_w, layers):
    """A house exporting 4 kW when an AC's run of the EV's size starts, the sun fading to
    nothing over the next two hours: after the run the net power stays above the export plus
    the EV's power all evening, though nothing is charging. A floor the sun made is no floor
    to hold a layer over. Control: judged as no export (``export_w`` over the floor's depth),
    the run is a layer held all evening."""
    sun = [4_400.0 * min(1.0, max(0.0, 1 - (m - 60) / 120)) for m in range(600)]
    powers = [400.0 - s + (3_600.0 if 60 <= m < 150 else 0.0) for m, s in enumerate(sun)]
    watts = np.asarray(powers, dtype=np.float64)
    times = np.arange(len(watts), dtype=np.float64) * 60.0
    found = held_layers(
        times,
        watts,
        3_600.0,
        rises_of_size(watts, 3_600.0, 0.15),
        floor_s=HOUR,
        max_gap_s=20 * 60.0,
        max_s=36 * HOUR,
        export_w=export_w,
    )
    assert len([layer for layer in found if layer.lasted > HOUR]) == layers


def test_a_gap_in_the_readings_ends_a_layer():
    powers = [ac_and_charge(m) for m in range(600)]
    times = np.arange(600, dtype=np.float64) * 60.0
    times[200:] += 3 * HOUR  # the meter silent for three hours mid-charge
    layers = layers_of(powers, times)
    (charge,) = [layer for layer in layers if layer.start == 145 * 60.0]
    assert charge.stop == 200 * 60.0  # a reading after the last before the gap


@pytest.mark.parametrize("apart_s", [900.0, 1.0])
def test_no_layers_where_readings_hide_the_acs_off_times_or_a_chargers_soft_start(apart_s):
    """15-min means blur an AC's off times into its runs; at 1 s a charger's soft start spans
    tens of readings, and a rise over one or two is a compressor's."""
    times = np.arange(10_000, dtype=np.float64) * apart_s
    powers = np.array([400.0 + (3_600.0 if 20 <= i < 8_000 else 0.0) for i in range(10_000)])
    assert layers_of(powers, times, max_gap_s=HOUR) == []


@pytest.mark.parametrize(
    ("cycler_w", "gap_at", "runs"),
    [(2_800.0, None, 6), (2_800.0, 310, 5), (4_500.0, None, 0), (None, None, 0)],
    ids=["its AC", "a gap mid-run", "another size", "none known"],
)
def test_a_layer_counts_the_runs_of_the_houses_cycler_on_top_of_it(cycler_w, gap_at, runs):
    """A 2.8 kW AC cycles 20 min on, 10 off; a 180 min charge holds six of its runs. The
    meter silent from 10 min into the last run, the layer ends with it still on: not seen to
    step off. No run counts of another size (a water heater's), nor with no cycler known."""
    cycler = Cycler(cycler_w, 0.15, 10 * 60.0) if cycler_w else None
    powers = [ac_and_charge(m, ac_w=2_800.0) for m in range(600)]
    times = np.arange(600, dtype=np.float64) * 60.0
    if gap_at is not None:
        times[gap_at:] += 3 * HOUR
    layers = layers_of(powers, times, cycler=cycler)
    (charge,) = [layer for layer in layers if layer.lasted > HOUR]
    assert charge.cycled_on_top == runs


def at(day: int, hour: float, hours: float, cycled_on_top: int = 0) -> Layer:
    start, stop = day * DAY + hour * HOUR, day * DAY + (hour + hours) * HOUR
    return Layer(start, stop, 3_600.0 * hours, 400.0, cycled_on_top)


def lost(layers: list[Layer], found=(), heat=lambda t: False) -> list[Layer]:
    return lost_charges(
        layers,
        list(found),
        min_s=1.5 * HOUR,
        apart_s=0.5 * HOUR,
        outlast_factor=2.0,
        outlast_margin_s=2 * HOUR,
        in_the_heat_hours=heat,
        cycled_on_min=2,
    )


# An AC's runs at 17:00-20:00 every day, 20-40 min long.
AC_RUNS = [at(day, 17 + k, 0.33 + 0.1 * (k % 3)) for day in range(7) for k in range(3)]


def test_a_layer_outlasting_its_time_of_days_other_layers_is_a_lost_charge():
    charge = at(5, 18.5, 3.0)
    assert lost([*AC_RUNS, charge]) == [charge]


def test_a_layer_no_longer_than_twice_another_days_layer_at_that_time_is_not():
    """The AC ran 2 h on another evening: a 3 h layer at that hour may be its run too."""
    long_run, charge = at(2, 18.0, 2.0), at(5, 18.5, 3.0)
    assert charge not in lost([*AC_RUNS, long_run, charge])
    # ... but a layer at another time of day is not judged against it.
    night = at(5, 2.0, 3.0)
    assert night in lost([*AC_RUNS, long_run, night])


def test_no_lost_charge_near_a_session_found_short_or_in_the_heat_hours():
    charge = at(5, 18.5, 3.0)
    near = [(charge.stop + 0.25 * HOUR, charge.stop + 2 * HOUR)]
    assert lost([*AC_RUNS, charge], found=near) == []
    assert lost([*AC_RUNS, at(5, 18.5, 1.25)]) == []
    assert lost([*AC_RUNS, charge], heat=lambda t: 17 <= (t % DAY) / HOUR <= 20) == []


def test_a_layer_the_houses_ac_cycled_on_top_of_twice_is_a_lost_charge_at_any_hour():
    """In the heat hours, as short as another day's AC run, but the AC stepped on and off it
    twice: an AC does not cycle on top of itself. Once is not enough; nor near a session."""
    heat = lambda t: True  # noqa: E731
    long_run = at(2, 18.0, 2.0)
    twice, once = at(5, 18.5, 1.0, cycled_on_top=2), at(6, 18.5, 1.0, cycled_on_top=1)
    assert lost([*AC_RUNS, long_run, twice, once], heat=heat) == [twice]
    assert lost([twice], found=[(twice.stop + 0.25 * HOUR, twice.stop + HOUR)]) == []


def test_a_session_in_a_layer_that_rose_earlier_and_held_through_it_began_with_the_layer():
    layer = at(5, 17.0, 4.0)  # 17:00-21:00
    day = 5 * DAY
    assert layer_begun_before([AC_RUNS[0], layer], day + 17.5 * HOUR, day + 20.5 * HOUR) == layer
    # Begun within 5 min of the layer's rise: found as it rose, nothing to move.
    assert layer_begun_before([layer], day + 17.05 * HOUR, day + 20.5 * HOUR) is None
    # The layer ended before 90% of the session: not the same load all along.
    assert layer_begun_before([layer], day + 17.5 * HOUR, day + 22.0 * HOUR) is None
    # Begun before any layer.
    assert layer_begun_before([layer], day + 16.0 * HOUR, day + 20.0 * HOUR) is None


def test_a_rise_of_the_evs_power_is_seen_over_one_or_two_readings_near_a_time():
    powers = np.array([400.0, 400.0, 4_000.0, 4_000.0, 400.0, 2_200.0, 4_000.0] + [400.0] * 5)
    rises = rises_of_size(powers, 3_600.0, 0.15)
    assert list(np.flatnonzero(rises)) == [2, 5]  # at once, and split over readings 5 and 6
    times = np.arange(len(powers)) * 60.0
    assert rose_at(times, rises, 0.0, 120.0)
    assert not rose_at(times, rises, 10 * 60.0, 120.0)
