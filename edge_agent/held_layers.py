"""Charges the detector lost under other loads, found over a whole file (offline mode).

The detector follows one candidate and one load on top of it: a charge that begins while an
AC's run is pending is dropped with that run. Seen over the whole file, such a charge is a
held layer: the house's power rises by the EV's own charging power and, until the charge
ends, never falls back to within three quarters of that power of its floor before the rise
(the AC's off times dip to the house plus the EV, not to the house). An AC's run makes a
layer of its size too, so a layer counts only where it lasts ``outlast_factor`` times as
long as any other layer that began at about its time of day (``outlast_margin_s``) on the
file's other days, and not in the hours the AC ran through the heat; or where the AC (the
house's commonest cycler, not of the EV's size) ran on top of it and stepped off while it
held, twice or more: an AC does not cycle on top of itself. A session the detector
found late (once the AC's run it rose in stepped off, or after a pause) lies in its charge's
layer, which began earlier: the charge began there. Pure: arrays in, layers out.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_agent.time_of_day import apart_in_the_day

# The house under its floor plus this share of the EV's power: the EV is gone (or tapered off).
HOLD_FRACTION = 0.75
# A session lies in a layer that rose this long or more before it and held through this share
# of it: the same load was on all along, and the session was found late.
EARLIER_S = 5 * 60.0
HELD_THROUGH = 0.9
# Readings this far apart or closer show an AC's off times (5 min and more) between its runs;
# this far apart or more, a charger's soft start (up to a minute) is within two readings (a
# rise over one or two 1-s readings is a compressor's, not a charger's).
READINGS_APART_S = (30.0, 300.0)


@dataclass(frozen=True, slots=True)
class Layer:
    start: float
    stop: float
    ev_energy_wh: float
    floor_w: float  # the house's floor before the rise
    # How many times the house's cycler (its AC) ran on top of it (``runs_on_top``).
    cycled_on_top: int = 0

    @property
    def lasted(self) -> float:
        return self.stop - self.start


def held_layers(
    times: np.ndarray,
    powers: np.ndarray,
    level: float,
    rises: np.ndarray,
    *,
    floor_s: float,
    max_gap_s: float,
    max_s: float,
    export_w: float,
    cycler: Cycler | None = None,
) -> list[Layer]:
    """Every layer of ``level``'s size (from each of its ``rises``, of ``rises_of_size``, the
    floor before it the lowest reading over ``floor_s``), each held until the house's power
    falls under that floor plus ``HOLD_FRACTION`` of ``level``, or a gap in the readings over
    ``max_gap_s``, for ``max_s`` at most. None rises from an export (a floor ``export_w`` or
    more under zero: rooftop solar): the sun fading holds the power above it as well as a
    charge would. Given the house's ``cycler``, each layer counts its runs on top."""
    n = len(times)
    if n < 3:
        return []
    interval = float(np.median(np.diff(times)))
    if not READINGS_APART_S[0] <= interval <= READINGS_APART_S[1]:
        return []
    after_no_gap = np.concatenate([[True], np.diff(times) <= max_gap_s])
    longest = max(2, round(max_s / interval))
    before = max(1, round(floor_s / interval))
    layers: list[Layer] = []
    held_to = 0
    for i in map(int, np.flatnonzero(rises)):
        if i < held_to:
            continue  # a rise inside a layer already found
        floor = float(powers[max(0, i - before) : i].min())
        if floor <= -export_w:
            continue
        held = (powers[i : i + longest] >= floor + HOLD_FRACTION * level) & after_no_gap[
            i : i + longest
        ]
        end = i + (int(np.argmin(held)) if not held.all() else len(held) - 1)
        if end - i < 2:
            continue
        # Ended by a gap, the layer was last seen a reading before it.
        stop = float(times[end] if after_no_gap[end] else times[end - 1] + interval)
        ev = energy_over(times, powers, floor, level, start=float(times[i]), stop=stop)
        on_top = 0
        if cycler is not None:
            on_top = runs_on_top(times[i:end], powers[i:end] - floor - level, cycler)
        layers.append(Layer(float(times[i]), stop, ev, floor, on_top))
        held_to = end
    return layers


@dataclass(frozen=True, slots=True)
class Cycler:
    """The load a house cycles most (its AC): its size, and what counts as one of its runs."""

    size_w: float
    tolerance: float  # a run's size within this share of ``size_w``
    min_s: float  # ... that ran this long


def runs_on_top(times: np.ndarray, over: np.ndarray, cycler: Cycler) -> int:
    """How many times ``cycler`` rose on top of a layer (``over``: the power over the layer's
    top, reading by reading), ran ``cycler.min_s`` or more and fell off it while it held."""
    on = np.concatenate([[False], over >= cycler.size_w / 2, [False]])
    edges = np.flatnonzero(np.diff(on.astype(np.int8)))
    count = 0
    for first, last in zip(edges[::2], edges[1::2], strict=True):
        if last >= len(over):
            break  # still on when the layer ended: not seen to fall off it
        size = float(np.median(over[first:last]))
        if (
            times[last] - times[first] >= cycler.min_s
            and abs(size - cycler.size_w) <= cycler.tolerance * cycler.size_w
        ):
            count += 1
    return count


def rises_of_size(powers: np.ndarray, level: float, tolerance: float) -> np.ndarray:
    """For each reading, whether the house's power rose into it by ``level`` (within
    ``tolerance``), over it alone or over it and the next (a rise split between readings)."""
    one = np.diff(powers, prepend=powers[:1])  # the rise into reading i
    two = np.zeros_like(powers)
    two[1:-1] = powers[2:] - powers[:-2]  # ... over readings i and i + 1
    return (np.abs(one - level) <= tolerance * level) | (
        (np.abs(two - level) <= tolerance * level) & (one > 0.2 * level)
    )


def rose_at(times: np.ndarray, rises: np.ndarray, t: float, within_s: float) -> bool:
    """A rise (of ``rises_of_size``) into a reading within ``within_s`` of ``t``."""
    first = int(np.searchsorted(times, t - within_s, side="left"))
    last = int(np.searchsorted(times, t + within_s, side="right"))
    return bool(rises[first:last].any())


def energy_over(
    times: np.ndarray, powers: np.ndarray, floor: float, cap: float, *, start: float, stop: float
) -> float:
    """The energy (Wh) from ``start`` to ``stop`` of the power over ``floor``, capped at
    ``cap``, each reading for as long as it held: in a layer, the EV's (its floor the layer's,
    capped at the EV's power: loads on top are not the EV's)."""
    first, last = (int(k) for k in np.searchsorted(times, [start, stop]))
    held = np.diff(np.append(times[first:last], stop))
    return float(np.clip(powers[first:last] - floor, 0.0, cap) @ held) / 3600.0


def layer_begun_before(layers: list[Layer], start: float, stop: float) -> Layer | None:
    """The layer (of ``layers``, in time order) a session found from ``start`` to ``stop``
    lies in, where it rose ``EARLIER_S`` or more before the session and held through
    ``HELD_THROUGH`` of it, or None."""
    k = bisect.bisect_right(layers, start, key=lambda layer: layer.start) - 1
    if k < 0:
        return None
    layer = layers[k]
    if layer.start <= start - EARLIER_S and layer.stop >= start + HELD_THROUGH * (stop - start):
        return layer
    return None


def lost_charges(
    layers: list[Layer],
    found: list[tuple[float, float]],
    *,
    min_s: float,
    apart_s: float,
    outlast_factor: float,
    outlast_margin_s: float,
    in_the_heat_hours: Callable[[float], bool],
    cycled_on_min: int,
) -> list[Layer]:
    """The layers that are charges the detector did not find: ``apart_s`` from any session it
    found, at least ``min_s`` long and outlasting their time of day's other layers, or with
    the house's cycler run on top of them ``cycled_on_min`` times (an AC does not cycle on
    top of itself: the layer is not its run through the heat, whatever the hour)."""
    free = [
        layer
        for layer in layers
        if not any(a - apart_s < layer.stop and layer.start < b + apart_s for a, b in found)
    ]
    lost = []
    for layer in free:
        if layer.cycled_on_top >= cycled_on_min:
            lost.append(layer)
            continue
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
