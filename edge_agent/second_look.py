"""The second look: charges the live detector missed, found over a meter's last days.

The live detector decides reading by reading. The offline mode judges a whole file's sessions
together: it knows the house's own charging power and the hours its AC runs through the heat
before it starts, and it finds charges held under other loads (``held_layers``). So, once a
day, the agent runs the offline mode over each meter's retained readings and publishes the
sessions it finds that the live detector did not: those that ended ``settle_s`` or more before
the look and overlap no session the live detector published, nor the one it has open or is
still judging, and are at the house's charging power as the live detector knows it. Each goes
out late, as an ``Ended`` and then its ``Started`` with the offline mode's
transactionId and confidence; the ingestor pairs them like any other. A live session is never
retracted: the wire contract has no retraction, and a consumer may already have acted on it.
A meter read faster than every 30 s is left to the live detector (``FAST_READINGS_S``).

Pure: readings and the live detector's spans in, transitions out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edge_agent.detector import Transition
from edge_agent.house import House
from edge_agent.interval_mean import IntervalMean
from edge_agent.interval_mean import Reading as KeptReading
from edge_agent.offline import detect
from edge_agent.time_of_day import DAY_S
from schemas.pleevi import TransactionState

Span = tuple[float, float]
"""(start, stop) epoch seconds of a session already published (stop may be infinite)."""

# The readings kept are minute means: what the offline mode is tuned on, and a day's 1,440 rows
# per meter however fast the gateway reads it.
KEPT_INTERVAL_S = 60.0
# A meter read faster than this is not looked at: the live detector judges its 10-s means, and
# its "no" is better informed than a look's "yes" over minute means (measured at 1 s: the looks'
# sessions were right 7 times in 19, fewer than the live detector's F1 over two; at 1 min,
# 88 in 152).
FAST_READINGS_S = 30.0


@dataclass
class SecondLook:
    """One meter's second looks: the minute means it keeps of the meter's readings (``keep``;
    the caller retains them), when the next look is due (``at_s`` into each UTC day, by the
    readings' time, so a replay looks where a live run did) and the spans of the sessions
    published over the last ``window_s`` (the live detector's and the looks' own)."""

    asset_id: str
    window_s: float = 14 * DAY_S
    # Fewer days than this and the offline mode has too few sessions to judge them together:
    # it would add more false sessions than lost ones.
    min_history_s: float = 7 * DAY_S
    settle_s: float = 2 * 3600.0
    at_s: float = 4 * 3600.0
    published: list[list[float]] = field(default_factory=list)
    next_at: float | None = None
    # Sessions that ended before this were judged by an earlier look: each is judged once.
    judged_to: float | None = None
    kept: IntervalMean = field(default_factory=lambda: IntervalMean(KEPT_INTERVAL_S))
    fast: bool = False  # the last two readings came closer than ``FAST_READINGS_S``

    def keep(self, t: float, power_w: float, energy_wh: float | None) -> list[KeptReading]:
        """The minute means (or slower readings) to retain that a reading completes."""
        if self.kept.last_t is not None:
            self.fast = t - self.kept.last_t < FAST_READINGS_S
        return self.kept.add(t, power_w, energy_wh)

    def due(self, t: float) -> bool:
        """Whether a reading at ``t`` is past the next look (the first reading only sets it)."""
        if self.next_at is None:
            self.next_at = self._after(t)
            return False
        return t >= self.next_at

    def _after(self, t: float) -> float:
        day = math.floor((t - self.at_s) / DAY_S) + 1
        return day * DAY_S + self.at_s

    def publish(self, start: float, stop: float) -> None:
        """A session sent: one the live detector ended (or a look's own)."""
        self.published.append([start, stop])

    def look(
        self,
        readings: Iterable[KeptReading],
        now: float,
        deciding_since: float | None,
        house: House,
        *,
        charging_power_w: float | None = None,
    ) -> list[Transition]:
        """The late sessions in ``readings`` (the meter's last ``window_s`` up to ``now``),
        beside the live detector's published ones and the one it is judging since
        ``deciding_since``, at its ``house``'s charging power; remembered as published, and the
        next look set a day on."""
        self.next_at = self._after(now)
        self.published = [span for span in self.published if span[1] >= now - self.window_s]
        readings = list(readings)
        if not readings or readings[0][0] > now - self.min_history_s:
            return []
        if self.fast:
            self.judged_to = now - self.settle_s  # judged by the live detector alone
            return []
        spans: list[Span] = [(a, b) for a, b in self.published]
        if deciding_since is not None:
            spans.append((deciding_since, math.inf))
        late = late_sessions(
            self.asset_id,
            readings,
            spans,
            house,
            now=now,
            settle_s=self.settle_s,
            ended_after=self.judged_to,
            charging_power_w=charging_power_w,
        )
        self.judged_to = now - self.settle_s
        for tr in late:
            if tr.state is TransactionState.ENDED:
                self.publish(tr.start_time, tr.stop_time or tr.timestamp)
        return late

    def snapshot(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "next_at": self.next_at,
            "judged_to": self.judged_to,
            "kept": self.kept.snapshot(),
            "fast": self.fast,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.published = [list(span) for span in state["published"]]
        self.next_at = state["next_at"]
        self.judged_to = state["judged_to"]
        self.kept.restore(state["kept"])
        self.fast = state["fast"]


def late_sessions(
    asset_id: str,
    readings: Iterable[KeptReading],
    published: Sequence[Span],
    house: House,
    *,
    now: float,
    settle_s: float,
    ended_after: float | None = None,
    charging_power_w: float | None = None,
) -> list[Transition]:
    """The ``Ended`` and ``Started`` transitions (in that order) of each session the offline
    mode finds in ``readings`` (time, power W, register Wh) that ended ``settle_s`` or more
    before ``now`` (and after ``ended_after``, if given), overlaps none of the ``published``
    spans and is at the charging power the live detector knows for the ``house`` (two
    judgements of the house's charger agree; none while it knows none), in time order."""
    found = detect(
        ((asset_id, t, p, e) for t, p, e in readings),
        house.config,
        charging_power_w=charging_power_w,
    )
    out: list[Transition] = []
    for ended in found:
        start, stop = ended.start_time, ended.stop_time or ended.timestamp
        if ended_after is not None and stop <= ended_after:
            continue
        if not house.at_charging_power(ended.ev_peak_power_w):
            continue
        if stop > now - settle_s or any(a < stop and start < b for a, b in published):
            continue
        started = replace(
            ended,
            state=TransactionState.STARTED,
            timestamp=start,
            stop_time=None,
            ev_power_w=ended.ev_peak_power_w,
            ev_energy_wh=0.0,
            meter_energy_wh=0.0,
            sequence_number=0,
        )
        # The Ended first: the session arrives whole. A Started days old, alone, is what an
        # ingestor times out as an orphan (no Ended while the meter reported on for 48 h), and
        # it could do so before the Ended behind it arrived; the contract pairs either order.
        out += [replace(ended, sequence_number=max(1, ended.sequence_number)), started]
    return out
