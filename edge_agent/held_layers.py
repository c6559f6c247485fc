"""Charges the detector lost under other loads, found over a whole file (offline mode).

The detector follows one candidate and one load on top of it: a charge that begins while an
AC's run is pending is dropped with that run. Seen over the whole file, such a charge is a
held layer: the house's power rises by the EV's own charging power and, until the charge
ends, never falls back to within three quarters of that power of its floor before the rise
(the AC's off times dip to the house plus the EV, not to the house). An AC's run makes a
layer of its size too, so a layer counts only where it lasts ``outlast_factor`` times as
long as any other layer that began at about its time of day (``outlast_margin_s``) on the
file's other days, and not in the hours the AC ran through the heat. Pure: arrays in, layers
out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_agent.house import apart_in_the_day

# A layer this much under the EV's power at its floor is the EV gone (or tapered off).
HOLD_FRACTION = 0.75
# Readings this far apart or closer show an AC's off times (5 min and more) between its runs;
# this far apart or more, a charger's soft start (up to a minute) is within two readings (a
# rise over one or two 1-s readings is a compressor's, not a charger's).
READINGS_APART_S = (30.0, 300.0)


@dataclass(frozen=True, slots=True)
class Layer:
    start: float
    stop: float
    ev_energy_wh: float

    @property
    def lasted(self) -> float:
        return self.stop - self.start


def held_layers(
    times: np.ndarray,
    powers: np.ndarray,
    level: float,
    *,
    tolerance: float,
    floor_s: float,
    max_gap_s: float,
    max_s: float,
) -> list[Layer]:
    """Every layer of ``level``'s size (a rise within ``tolerance`` of it over one or two
    readings, the floor before it the lowest reading over ``floor_s``), each held until the
    house's power falls under that floor plus ``HOLD_FRACTION`` of ``level``, or a gap in the
    readings over ``max_gap_s``, for ``max_s`` at most."""
    n = len(times)
    if n < 3:
        return []
    interval = float(np.median(np.diff(times)))
    if not READINGS_APART_S[0] <= interval <= READINGS_APART_S[1]:
        return []
    after_no_gap = np.concatenate([[True], np.diff(times) <= max_gap_s])
    longest = max(2, round(max_s / interval))
    before = max(1, round(floor_s / interval))
    one = powers[1:-1] - powers[:-2]  # the rise into reading i (i from 1)
    two = powers[2:] - powers[:-2]  # ... over readings i and i + 1, once the first is a rise
    of_size = (np.abs(one - level) <= tolerance * level) | (
        (np.abs(two - level) <= tolerance * level) & (one > 0.2 * level)
    )
    layers: list[Layer] = []
    held_to = 0
    for i in map(int, np.flatnonzero(of_size) + 1):
        if i < held_to:
            continue  # a rise inside a layer already found
        floor = float(powers[max(0, i - before) : i].min())
        held = (powers[i : i + longest] >= floor + HOLD_FRACTION * level) & after_no_gap[
            i : i + longest
        ]
        end = i + (int(np.argmin(held)) if not held.all() else len(held) - 1)
        if end - i < 2:
            continue
        ev = np.clip(powers[i:end] - floor, 0.0, level)
        # Ended by a gap, the layer was last seen a reading before it.
        stop = times[end] if after_no_gap[end] else times[end - 1] + interval
        layers.append(Layer(float(times[i]), float(stop), float(ev.sum()) * interval / 3600))
        held_to = end
    return layers


def lost_charges(
    layers: list[Layer],
    found: list[tuple[float, float]],
    *,
    min_s: float,
    apart_s: float,
    outlast_factor: float,
    outlast_margin_s: float,
    in_the_heat_hours: Callable[[float], bool],
) -> list[Layer]:
    """The layers that are charges the detector did not find: ``apart_s`` from any session it
    found, at least ``min_s`` long and outlasting their time of day's other layers."""
    free = [
        layer
        for layer in layers
        if not any(a - apart_s < layer.stop and layer.start < b + apart_s for a, b in found)
    ]
    lost = []
    for layer in free:
        if layer.lasted < min_s or in_the_heat_hours(layer.start):
            continue
        others = [
            other.lasted
            for other in free
            if abs(other.start - layer.start) > 43_200.0  # another day's
            and apart_in_the_day(other.start, layer.start) <= outlast_margin_s
        ]
        if layer.lasted >= outlast_factor * max(others, default=0.0):
            lost.append(layer)
    return lost
