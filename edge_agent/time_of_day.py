"""Times of day (UTC), for what a house does at about the same time every day."""

from __future__ import annotations

DAY_S = 86_400.0


def apart_in_the_day(a: float, b: float) -> float:
    """Seconds between two times of day (or instants' times of day), across midnight."""
    off = abs(a - b) % DAY_S
    return min(off, DAY_S - off)


def hours_about(t: float, margin: int) -> list[int]:
    """The hours of the day (UTC, 0-23) within ``margin`` hours of ``t``'s."""
    hour = int(t // 3600)
    return [(hour + k) % 24 for k in range(-margin, margin + 1)]
