"""How a battery winding its charge down is told from loads stepping on and off.

A filling battery's charge tapers over minutes through intermediate values; an appliance
switches on and off in a step. The *trend* of a run of readings sums their small changes only,
so the taper shows through whatever loads step on and off on top of it. Pure functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_agent.detector import DetectorConfig


def extend_trend(xs: list[float], trend: list[float], excess: float, step: float) -> None:
    """Loads switching on and off step; a battery winding its charge down does not. ``trend``
    sums the small changes of ``xs`` only, a reading behind (``excess`` is the reading about to
    be appended): a change is part of a step when, with the reading before or after it, it
    makes a large one (a load switching mid-interval splits its step over two readings)."""
    if len(xs) >= 2:
        earlier = xs[-3] if len(xs) >= 3 else None
        small = small_change(earlier, xs[-2], xs[-1], excess, step)
        trend.append(trend[-1] + (xs[-1] - xs[-2] if small else 0.0))
    elif len(xs) == 1:
        trend.append(0.0)


def small_change(
    earlier: float | None, before: float, now: float, after: float | None, step: float
) -> bool:
    """``now - before`` is a small change, not part of a load switching on or off: under
    ``step``, and not a large one with the reading before or after it (a switch split over an
    interval boundary)."""
    return (
        abs(now - before) <= step
        and (after is None or abs(after - before) <= 2 * step)
        and (earlier is None or abs(now - earlier) <= 2 * step)
    )


def small_change_climb(xs: list[float], step: float) -> float:
    """What ``xs`` climbed by through its small changes only (its steps left out)."""
    return sum(
        xs[i] - xs[i - 1]
        for i in range(1, len(xs))
        if small_change(
            xs[i - 2] if i >= 2 else None,
            xs[i - 1],
            xs[i],
            xs[i + 1] if i + 1 < len(xs) else None,
            step,
        )
    )


def wound_down(
    trend: list[float], level: float, dt: float, cfg: DetectorConfig, flat_s: float | None = None
) -> tuple[int, int] | None:
    """(top, bottom) of a taper that ended ``flat_s`` (default ``taper_flat_s``) ago: the trend
    (steps left out) wound down steadily by most of ``level`` within ``taper_window_s`` and has
    been flat since, whatever loads switched on and off on top."""
    flat_n = max(2, round(cfg.taper_flat_s / dt)) if flat_s is None else round(flat_s / dt)
    bottom = len(trend) - 1 - flat_n
    if bottom < 0:
        return None
    tail = trend[bottom:]
    low = min(tail)
    if max(tail) - low > cfg.taper_step * level:
        return None
    bottom += tail.index(low)  # the taper's last steps
    lo = max(0, bottom - round(cfg.taper_window_s / dt))
    window = trend[lo : bottom + 1]
    high = max(window)
    if high - low < cfg.taper_depth * level:
        return None
    top = lo + window.index(high)
    if (bottom - top) * dt < cfg.taper_min_s or top * dt < cfg.taper_min_s:
        return None
    low = high
    for value in trend[top : bottom + 1]:  # winding down all the way, not a random walk
        if value - low > cfg.taper_rebound * level:
            return None
        low = min(low, value)
    return top, bottom


def tapering_power(trend: list[float], level: float, top: int, k: int) -> float:
    """The EV's own power at reading ``k`` of a taper from ``top``: its level less what its
    charge had wound down by, whatever ran on top."""
    return max(0.0, level + trend[k] - trend[top])
