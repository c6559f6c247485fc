"""Readings faster than the detector's interval, averaged into interval means.

A gateway on a meter's local port reads it every second or few; the detector judges steps,
falls and tapers reading by reading, and at one second a compressor's and the supply's
flicker (tens to a hundred watts, sample to sample) reads as steps and rebounds that a
minute's mean smooths away. Readings closer than ``interval_s`` are averaged into means over
``interval_s``, each labelled at its first reading with that reading's register (a mean is
labelled at its interval's start, as a meter's interval data is). Readings ``interval_s`` or
more apart pass straight through, so a meter read every minute is judged on its readings as
they come, not one late. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Reading = tuple[float, float, float | None]
"""(epoch seconds, power W, register Wh or None)."""


@dataclass
class IntervalMean:
    interval_s: float
    # The interval being filled: its first reading's time and register, power sum, count.
    start: float | None = None
    register: float | None = None
    power_sum: float = 0.0
    count: int = 0
    last_t: float | None = None  # the last reading added

    def passes(self, t: float) -> bool:
        """A reading at ``t`` passes straight through (nothing is filling and it comes
        ``interval_s`` or more after the last one), and is taken as added: the common case of
        minute data, answered without building a list."""
        last = self.last_t
        if self.start is None and last is not None and t - last >= self.interval_s:
            self.last_t = t
            return True
        return False

    def add(self, t: float, power_w: float, energy_wh: float | None) -> list[Reading]:
        """The means (and passed-through readings) that ``(t, power_w, energy_wh)`` completes,
        in time order; readings must come in time order. The first reading waits for the
        second: only then is the meter's pace known."""
        if self.passes(t):
            return [(t, power_w, energy_wh)]
        slow = self.last_t is not None and t - self.last_t >= self.interval_s
        self.last_t = t
        out: list[Reading] = []
        if self.start is not None and (slow or t - self.start >= self.interval_s):
            out = self.flush()
        if slow:  # the meter slowed down: the mean it was filling ends, this one passes
            out.append((t, power_w, energy_wh))
            return out
        if self.start is None:
            self.start, self.register = t, energy_wh
        self.power_sum += power_w
        self.count += 1
        return out

    def flush(self) -> list[Reading]:
        """The interval being filled, as a mean, if any (the end of a file)."""
        if self.start is None or self.count == 0:
            return []
        mean = (self.start, self.power_sum / self.count, self.register)
        self.start, self.register, self.power_sum, self.count = None, None, 0.0, 0
        return [mean]

    def snapshot(self) -> dict[str, Any]:
        """Its state (the interval is the detector's setting, not state)."""
        return {name: value for name, value in vars(self).items() if name != "interval_s"}

    def restore(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
