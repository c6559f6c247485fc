"""A net meter's rooftop PV output, estimated from the house's lows (both modes).

Behind a net meter the panels' output is taken off the house's load: each afternoon the sun's
fade climbs under every load, and a passing cloud is a step. Seen over days, the house's lowest
power at each quarter hour of the day is its base load less what the panels gave at that time
on a clear day. So the panels' output at a time of day is how far that low sits under the
house's base at night, taken over the days around (the sun's path shifts over the year). A
load on at that quarter hour on every one of those days (an AC through hot afternoons) would
hide the panels there; the panels' output rises to one peak and falls, so it is taken as that
single hump's envelope. Added back, the meter reads the house's own load, as a meter without panels
would, and every rule for such a house applies. Pure: arrays in, arrays out.

The quarter hours are of the UTC day, not the local one: the sun keeps to UTC (daylight saving
time moves the clock, not the sun). The hump is found from the middle of the night, wherever
the meter's time zone puts it in the UTC day.

Offline (``panel_output``) each day's estimate is made from the lows of the five days either
side over the whole file; a running agent (``PanelLows``) makes it at the middle of each night
from its last eleven days'.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np

from edge_agent.time_of_day import DAY_S, apart_in_the_day

BIN_S = 900.0
BINS = int(DAY_S // BIN_S)
DAYS_KEPT = 11  # a running agent's: each night's estimate from the last eleven days' lows
DAYS_AROUND = 5  # offline, each day's estimate from its lows and those of five days either side
PEAK_SPAN = int(2 * 3600 // BIN_S)  # the sun's peak: the lowest lows on average over 2 h
# The house's base: its lowest low within 3 h either side of the night's middle.
NIGHT_HALF = int(3 * 3600 // BIN_S)


def quarter_hour(t: np.ndarray) -> np.ndarray:
    return ((t % DAY_S) // BIN_S).astype(np.int64)


def daily_output(lows: np.ndarray, export_w: float, night: int | None = None) -> np.ndarray:
    """The panels' output at each quarter hour of the UTC day (W, >= 0) from the house's
    lowest power at each (``inf`` where unread) over the days taken: nothing where fewer than
    half the day's quarter hours were read (the night is not known). ``night``: the quarter
    hour of the night's middle, where the caller has it (``middle_of_the_night``)."""
    seen = np.isfinite(lows)
    if seen.sum() < BINS // 2:
        return np.zeros(BINS)
    if night is None:
        night = middle_of_the_night(lows, seen)
    # The house's base with no sun: its lowest low around the night's middle (not the
    # day's highest lows: an evening's loads keep those of its own hours high).
    around = (night + np.arange(-NIGHT_HALF, NIGHT_HALF + 1)) % BINS
    level = float(lows[around][seen[around]].min()) if seen[around].any() else 0.0
    gave = np.where(seen, level - lows, 0.0)
    gave = np.clip(gave - export_w, 0.0, None)  # a night's lows wander by a few watts
    # One hump, rising to its peak and falling after it, from the middle of the night.
    day = np.roll(gave, -night)
    hump = np.minimum(np.maximum.accumulate(day), np.maximum.accumulate(day[::-1])[::-1])
    return np.roll(hump, night)


def middle_of_the_night(lows: np.ndarray, seen: np.ndarray) -> int:
    """The quarter hour 12 h from the sun's peak: where the lows are lowest on average over
    ``PEAK_SPAN`` (the day wrapped round, unread ones left out)."""
    ring = np.ones(PEAK_SPAN)
    total = np.convolve(np.tile(np.where(seen, lows, 0.0), 3), ring, mode="same")[BINS : 2 * BINS]
    count = np.convolve(np.tile(seen.astype(float), 3), ring, mode="same")[BINS : 2 * BINS]
    peak = int(np.argmin(np.where(count > 0, total / np.maximum(count, 1.0), np.inf)))
    return (peak + BINS // 2) % BINS


def panel_output(
    times: np.ndarray, powers: np.ndarray, *, export_w: float, min_peak_w: float
) -> np.ndarray | None:
    """Over a whole file, the panels' estimated output (W, >= 0) at each reading, or None where
    the meter never exported ``export_w`` or more, or the estimate peaks under ``min_peak_w``
    (no panels)."""
    read = np.isfinite(powers)  # an empty reading is no low
    if not np.any(powers[read] <= -export_w):
        return None
    # Only the days read (a stray timestamp years away is one more row, not years of rows).
    days, row = np.unique(np.floor(times / DAY_S).astype(np.int64), return_inverse=True)
    lows = np.full((len(days), BINS), np.inf)
    np.minimum.at(lows, (row[read], quarter_hour(times[read])), powers[read])
    first, last = (
        np.searchsorted(days, days - DAYS_AROUND),
        np.searchsorted(days, days + DAYS_AROUND, "right"),
    )
    output = np.array(
        [daily_output(lows[a:b].min(axis=0), export_w) for a, b in zip(first, last, strict=True)]
    )
    if float(output.max()) < min_peak_w:
        return None
    centres = days[:, None] * DAY_S + (np.arange(BINS) + 0.5) * BIN_S
    estimate: np.ndarray = np.interp(times, centres.ravel(), output.ravel())
    return estimate


class PanelLows:
    """A running agent's estimate for one meter: the house's lows at each quarter hour of its
    last ``DAYS_KEPT`` UTC days (today's so far among them), and the day's estimate made from
    them at the middle of each night, where the panels give nothing and a new estimate starts
    without a step. Until a night's middle has passed with half a day's lows known, and on a
    meter whose lows never showed an export, it adds nothing."""

    def __init__(self, export_w: float, min_peak_w: float) -> None:
        self.export_w, self.min_peak_w = export_w, min_peak_w
        self.days: list[list[float | None]] = []  # [UTC day, W low per quarter hour (None: unread)]
        self.output: list[int] | None = None  # the day's estimate per quarter hour (W)
        self.renew_at: float | None = None

    def saw(self, t: float, power_w: float) -> None:
        day = float(t // DAY_S)
        if not self.days or self.days[-1][0] != day:
            # Only the last days' (after a long outage, none of before it: another season's).
            self.days = [r for r in self.days if day - cast(float, r[0]) < DAYS_KEPT]
            self.days.append([day, *([None] * BINS)])
        row, q = self.days[-1], 1 + int((t % DAY_S) // BIN_S)
        low, watts = row[q], round(power_w)  # whole watts, as saved (``snapshot``)
        row[q] = watts if low is None else min(low, watts)
        if self.renew_at is None:
            self.renew_at = t + DAY_S  # a day's lows first
        elif t >= self.renew_at:
            self._renew(t)

    def at(self, t: float) -> float:
        """The panels' estimated output at ``t`` (W), between its quarter hours' values."""
        output = self.output
        if output is None:
            return 0.0
        x = (t % DAY_S) / BIN_S - 0.5
        i = math.floor(x)
        a, b = output[i % BINS], output[(i + 1) % BINS]
        return a + (b - a) * (x - i)

    def _renew(self, t: float) -> None:
        rows = np.array([[math.inf if w is None else w for w in row[1:]] for row in self.days])
        lows = rows.min(axis=0)
        seen = np.isfinite(lows)
        if seen.sum() < BINS // 2:
            self.renew_at = t + 3600.0
            return
        middle = middle_of_the_night(lows, seen)
        night = (middle + 0.5) * BIN_S
        if apart_in_the_day(t, night) <= BIN_S:  # the night's middle
            output = daily_output(lows, self.export_w, middle)
            exported = float(lows[seen].min()) <= -self.export_w
            panels = exported and output.max() >= self.min_peak_w
            self.output = [round(w) for w in output.tolist()] if panels else None
        renew = t // DAY_S * DAY_S + night
        while renew <= t + BIN_S:
            renew += DAY_S
        self.renew_at = renew

    def snapshot(self) -> dict[str, Any]:
        # Lows and output are kept in whole watts: the detector's snapshot is saved on every
        # commit (a gateway's storage is flash), and a restored one must decide as it would have.
        return {"days": self.days, "output": self.output, "renew_at": self.renew_at}

    def restore(self, state: dict[str, Any]) -> None:
        self.days = [list(row) for row in state["days"]]
        self.output, self.renew_at = state["output"], state["renew_at"]
