"""A net meter's rooftop PV output, estimated from the house's lows (both modes).

Behind a net meter the panels' output is taken off the house's load: each afternoon the sun's
fade climbs under every load, and a passing cloud is a step. Seen over days, the house's lowest
power at each quarter hour of the day is its base load less what the panels gave at that time
on a clear day. So the panels' output at a time of day is how far that low sits under the
night's lows, taken over the days around (the sun's path shifts over the year). A load on at
that quarter hour on every one of those days (an AC through hot afternoons) would hide the
panels there; the panels' output rises to one peak and falls, so it is taken as that single
hump's envelope. Added back, the meter reads the house's own load, as a meter without panels
would, and every rule for such a house applies. Pure: arrays in, arrays out.

The quarter hours are of the UTC day, not the local one: the sun keeps to UTC (daylight saving
time moves the clock, not the sun). The hump is found from the middle of the night, wherever
the meter's time zone puts it in the UTC day.
"""

from __future__ import annotations

import numpy as np

DAY_S = 86_400.0
BIN_S = 900.0
BINS = int(DAY_S // BIN_S)
DAYS_AROUND = 5  # offline, each day's estimate from its lows and those of five days either side
NIGHT_QUANTILE = 75.0  # of the quarter hours' lows: the panels give nothing there
NIGHT_SPAN = int(8 * 3600 // BIN_S)  # the night's middle: the highest lows on average over 8 h


def quarter_hour(t: np.ndarray) -> np.ndarray:
    return ((t % DAY_S) // BIN_S).astype(np.int64)


def daily_output(lows: np.ndarray, export_w: float) -> np.ndarray:
    """The panels' output at each quarter hour of the UTC day (W, >= 0) from the house's
    lowest power at each (``inf`` where unread) over the days taken: nothing where fewer than
    half the day's quarter hours were read (the night is not known)."""
    seen = np.isfinite(lows)
    if seen.sum() < BINS // 2:
        return np.zeros(BINS)
    gave = np.where(seen, np.percentile(lows[seen], NIGHT_QUANTILE) - lows, 0.0)
    gave = np.clip(gave - export_w, 0.0, None)  # a night's lows wander by a few watts
    # One hump, rising to its peak and falling after it, found from the middle of the night.
    night = _middle_of_the_night(lows, seen)
    day = np.roll(gave, -night)
    hump = np.minimum(np.maximum.accumulate(day), np.maximum.accumulate(day[::-1])[::-1])
    return np.roll(hump, night)


def _middle_of_the_night(lows: np.ndarray, seen: np.ndarray) -> int:
    """The quarter hour around which the lows are highest (over ``NIGHT_SPAN``, the day
    wrapped round, unread ones left out)."""
    ring = np.ones(NIGHT_SPAN)
    total = np.convolve(np.tile(np.where(seen, lows, 0.0), 3), ring, mode="same")[BINS : 2 * BINS]
    count = np.convolve(np.tile(seen.astype(float), 3), ring, mode="same")[BINS : 2 * BINS]
    return int(np.argmax(np.where(count > 0, total / np.maximum(count, 1.0), -np.inf)))


def panel_output(
    times: np.ndarray, powers: np.ndarray, *, export_w: float, min_peak_w: float
) -> np.ndarray | None:
    """Over a whole file, the panels' estimated output (W, >= 0) at each reading, or None where
    the meter never exported ``export_w`` or more, or the estimate peaks under ``min_peak_w``
    (no panels)."""
    read = np.isfinite(powers)  # an empty reading is no low
    if not np.any(powers[read] <= -export_w):
        return None
    days = np.floor(times / DAY_S).astype(np.int64)
    first = int(days.min())
    lows = np.full((int(days.max()) - first + 1, BINS), np.inf)
    np.minimum.at(lows, (days[read] - first, quarter_hour(times[read])), powers[read])
    output = np.array(
        [
            daily_output(lows[max(0, d - DAYS_AROUND) : d + DAYS_AROUND + 1].min(axis=0), export_w)
            for d in range(len(lows))
        ]
    )
    if float(output.max()) < min_peak_w:
        return None
    centres = (first + np.arange(len(lows))[:, None]) * DAY_S + (np.arange(BINS) + 0.5) * BIN_S
    estimate: np.ndarray = np.interp(times, centres.ravel(), output.ravel())
    return estimate
