"""What a meter's detector has learnt of the house behind it.

The loads it saw cycle (an AC's runs, a water heater's recoveries), the hours its AC runs
through the heat, the hours it exports and its panels' output (rooftop solar), and its EV's
own charging power and charging timer. Pure: no I/O, no clock; the detector feeds it and asks
it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from edge_agent.rooftop_solar import PanelLows
from edge_agent.time_of_day import DAY_S, apart_in_the_day, hours_about

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_agent.detector import DetectorConfig

_Item = TypeVar("_Item")


def _sharing(items: list[_Item], power: Callable[[_Item], float]) -> list[list[_Item]]:
    """For each of ``items``, in ascending order, those whose ``power`` is within 5% of its."""
    ordered = sorted(items, key=power)
    return [[q for q in ordered if abs(power(q) - power(p)) <= 0.05 * power(p)] for p in ordered]


def commonest_power(powers: list[float]) -> float:
    """The power most of ``powers`` share (within 5%), the lowest such on a tie: the median of
    those. Runs with another load stepping about their edges scatter; a median of all would
    follow them where they are many."""
    most: list[float] = max(_sharing(powers, float), key=len)
    return statistics.median(most)


def charging_power(
    powers: list[float],
    large_w: float = math.inf,
    few: int = 3,
    days: list[int] | None = None,
    in_the_heat: list[bool] | None = None,
) -> float:
    """The power most of a house's sessions share (``commonest_power``): sessions with
    another load on top through their confirmation, or found where the EV was not, scatter.
    ``few`` sessions or more sharing a power above ``large_w`` (more than any one appliance
    draws), at least half as many as share the most common power, are the EV's: an AC's long
    runs taken for charges on hot afternoons can outnumber a large EV's sessions. (Charges
    confirmed with the AC on top share a large power too, but they are a few of the house's
    sessions.) Given the sessions' ``days``, those few must fall on as many days: two
    appliances running together three times one evening are not a car. Nor are they where
    sessions on two days or more sit at half their power (within 10%): those are the EV
    alone, and the large ones the EV confirmed with a load of its own size on top (a 3.5 kW
    charge under a 3.5 kW AC's run). So, too, where the power most share is such a large one
    and more sessions sit at its half than share it: the EV alone, more than 5% apart where
    loads stepped about its edges. Given whether each session began in the AC's heat hours,
    the common power is an AC's runs only if half its sessions or more did."""
    heat = in_the_heat if in_the_heat is not None else [True] * len(powers)
    sessions = sorted(
        zip(powers, days if days is not None else range(len(powers)), heat, strict=True)
    )
    groups = _sharing(sessions, lambda session: session[0])
    most = max(groups, key=len)
    if 2 * sum(h for _, _, h in most) < len(most):
        return statistics.median(q for q, _, _ in most)

    def doubled(power: float) -> bool:
        return len({d for q, d, _ in sessions if abs(2 * q - power) <= 0.1 * power}) >= 2

    large = [
        group
        for group in groups
        if len({d for _, d, _ in group}) >= few
        and 2 * len(group) >= len(most)
        and (power := statistics.median(q for q, _, _ in group)) >= large_w
        and not doubled(power)
    ]
    if large:
        return statistics.median(q for q, _, _ in max(large, key=len))
    power = statistics.median(q for q, _, _ in most)
    half = [q for q, _, _ in sessions if abs(2 * q - power) <= 0.1 * power]
    if power >= large_w and doubled(power) and len(half) > len(most):
        return statistics.median(half)  # the EV alone, scattered by loads around its edges
    return power


@dataclass
class House:
    config: DetectorConfig
    # The house's own charging power, when known: the offline mode learns it from a first run
    # over the whole file, a running agent from its own last sessions (``session_powers``).
    charging_w: float | None = None
    # The EV's charging power as the operator configured it (measured on a past charge): the
    # house's charging power from the first reading on, never replaced by a learnt one.
    known_w: float | None = None
    session_powers: list[float] = field(default_factory=list)
    timer_s: float | None = None  # the time of day (s, UTC) its charging timer starts
    # Loads seen cycling lately: [end, level, length] (older snapshots: [end, level]).
    cycles: list[list[float]] = field(default_factory=list)
    # The last export (rooftop solar behind the meter) seen in each hour of the day (UTC).
    export_hours: list[float | None] = field(default_factory=lambda: [None] * 24)
    # Each hour of the day's (UTC) lowest net power on the last few days: [day, W] per day.
    hour_lows: list[list[list[float]]] = field(default_factory=lambda: [[] for _ in range(24)])
    # When a running agent new to the meter began to follow it (``DetectorConfig.warmup_s``).
    met_at: float | None = None
    # For each hour of the day (UTC), when the AC's latest runs through the heat that covered
    # it ended (see ``MeterDetector._ran_through_the_heat``).
    heat_hours: list[list[float]] = field(default_factory=lambda: [[] for _ in range(24)])
    # A running agent's estimate of its rooftop PV's output, from its last days' lows.
    panels: PanelLows = field(init=False)

    def __post_init__(self) -> None:
        self.panels = PanelLows(self.config.solar_export_w, self.config.min_ev_power_w / 2)

    # ------------------------------------------------------------------ its EV's charging power
    def at_charging_power(self, level: float, tolerance: float | None = None) -> bool:
        """The house's own charging power is known and ``level`` is it (within
        ``hint_tolerance``, or ``tolerance``)."""
        power = self.charging_w
        tol = self.config.hint_tolerance if tolerance is None else tolerance
        return power is not None and abs(level - power) <= tol * power

    def off_its_charging_size(self, level: float) -> bool:
        """The house's own charging power is known and ``level`` is not of its size (judged
        as a cycler's size is, ``cycle_tolerance``)."""
        return self.charging_w is not None and not self.at_charging_power(
            level, self.config.cycle_tolerance
        )

    def on_its_timer(self, start: float, level: float) -> bool:
        """A load at the house's charging power that began at ``start``, the minute its
        charging timer starts (an off-peak rate's start): the EV, whatever cycles at night."""
        timer = self.timer_s
        if timer is None or not self.at_charging_power(level):
            return False
        return apart_in_the_day(start, timer) <= self.config.timer_slack_s

    def learn_charging_power(self, power_w: float) -> None:
        """A house's charges share one power (one car, one charger): once enough of its
        sessions are in, the power most of them share is the house's own charging power."""
        cfg = self.config
        self.session_powers = [*self.session_powers, power_w][-cfg.house_power_memory :]
        self.judge_charging_power()

    def know_charging_power(self, power_w: float) -> None:
        self.known_w = self.charging_w = power_w

    def judge_charging_power(self) -> None:
        if self.known_w is not None:
            return
        cfg, powers = self.config, self.session_powers
        if len(powers) < cfg.household_min_sessions:
            return
        # As over a whole file, a session at under half the typical power is another load's
        # (a well pump, the base load climbing for hours): not counted for or against.
        typical = statistics.median(powers)
        powers = [p for p in powers if p >= cfg.household_level_fraction * typical]
        house = charging_power(powers, cfg.large_load_w)
        # Unlike a whole file's, a running agent's sessions are not yet weeded of other loads':
        # only a power most of them share is taken (a false one scattered is a wrong cap).
        shared = sum(abs(p - house) <= 0.05 * house for p in powers)
        self.charging_w = house if shared >= cfg.house_power_share * len(powers) else None

    # ------------------------------------------------------------------ its cycling loads
    def new_to_it(self, t: float) -> bool:
        """A running agent began to follow the meter under ``warmup_s`` ago: it has not yet
        seen the house's appliances cycle (an AC's hour-long runs on its first afternoon)."""
        return self.met_at is not None and t - self.met_at < self.config.warmup_s

    def cycles_of_size(self, level: float) -> list[list[float]]:
        """The remembered cycles ([end, level, length]) of a load of ``level``'s size (at the
        house's charging power, only a load within ``hint_tolerance`` of it is of its size)."""
        cfg = self.config
        tol = cfg.hint_tolerance if self.at_charging_power(level) else cfg.cycle_tolerance
        return [c for c in self.cycles if abs(c[1] - level) <= tol * level]

    def runs_of_size(self, level: float) -> list[tuple[float, float]]:
        """(began, lasted) of each remembered cycle of ``level``'s size; one remembered without
        its length (an older snapshot's) is taken as long, begun at its end."""
        return [
            (c[0] - c[2], c[2]) if len(c) > 2 else (c[0], math.inf)
            for c in self.cycles_of_size(level)
        ]

    def run_lengths_near(self, t: float, level: float) -> list[float]:
        """How long each remembered run of ``level``'s size lasted that began within
        ``outlast_margin_s`` of ``t``'s time of day."""
        margin = self.config.outlast_margin_s
        return [
            lasted
            for began, lasted in self.runs_of_size(level)
            if apart_in_the_day(began, t) <= margin
        ]

    def cycling_nearby(self, t: float, level: float) -> bool:
        horizon = t - self.config.cycle_lookback_s
        similar = [c for c in self.cycles_of_size(level) if c[0] >= horizon]
        return len(similar) >= self.config.cycle_min_count

    def forget_cycles_before(self, t: float) -> None:
        self.cycles = [c for c in self.cycles if c[0] >= t]

    # ------------------------------------------------------------------ its AC in the heat
    def ran_through_at(self, start: float, stop: float) -> None:
        """A run held back as the AC's (begun just after its cycle, or in its heat hours) went
        on for ``heat_run_s`` and more, and the same load came back after it: the AC ran through
        the heat over these hours of the day."""
        for hour in range(int(start // 3600), int(stop // 3600) + 1):
            ends = self.heat_hours[hour % 24]
            ends.append(stop)
            del ends[: -self.config.heat_memory]

    def in_the_heat_hours(self, t: float) -> bool:
        """On ``heat_min_days`` days in the last ``heat_lookback_s`` (offline, or after it in
        the file), the AC ran through the heat within ``heat_margin_h`` of this hour of the day:
        the first run of a hot afternoon has no cycle just before it to give it away, but it
        comes at those hours."""
        cfg = self.config
        for hour in hours_about(t, cfg.heat_margin_h):
            ends = self.heat_hours[hour]
            days = {int(end // DAY_S) for end in ends if t - end <= cfg.heat_lookback_s}
            if len(days) >= cfg.heat_min_days:
                return True
        return False

    # ------------------------------------------------------------------ its solar panels
    def saw_export(self, t: float) -> None:
        self.export_hours[int(t // 3600) % 24] = t

    def saw_power(self, t: float, power_w: float) -> None:
        lows = self.hour_lows[int(t // 3600) % 24]
        day = t // DAY_S
        if lows and lows[-1][0] == day:
            lows[-1][1] = min(lows[-1][1], power_w)
        else:
            lows.append([day, power_w])
            del lows[: -self.config.hour_low_days - 1]

    def lowest_at_this_hour(self, t: float) -> float | None:
        """The house's lowest net power at this hour of the day on its ``hour_low_days`` last
        days (while no load was followed): with rooftop solar, about the most the sun can take
        off its load now. At dusk a session's base, an export at its start, is no lower."""
        day = t // DAY_S
        span = self.config.hour_low_days
        lows = [w for d, w in self.hour_lows[int(t // 3600) % 24] if 0 < day - d <= span]
        return min(lows) if lows else None

    def sun_faded(self, since: float, t: float) -> float:
        """How far the house's lowest net power at this hour lately rose from ``since``'s hour
        to ``t``'s (the sun fading as on its last days), or 0 where not known or not risen."""
        before, now = self.lowest_at_this_hour(since), self.lowest_at_this_hour(t)
        if before is None or now is None:
            return 0.0
        return max(0.0, now - before)

    def solar(self, t: float) -> bool:
        """The house exported lately at about this time of day (``solar_hours`` either side): its
        panels may be generating now. At night its net load is its own, as in a house without."""
        cfg = self.config
        return any(
            (seen := self.export_hours[hour]) is not None and t - seen <= cfg.solar_memory_s
            for hour in hours_about(t, cfg.solar_hours)
        )

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> dict[str, Any]:
        """Its part of the detector's snapshot (the keys older snapshots used)."""
        return {
            "export_hours": self.export_hours,
            "hour_lows": self.hour_lows,
            "heat_hours": self.heat_hours,
            "recent_cycles": self.cycles,
            "session_powers": self.session_powers,
            "met_at": self.met_at,
            "panels": self.panels.snapshot(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Restores its part of a detector's snapshot; a snapshot written before a field existed
        keeps that field's fresh default."""
        self.heat_hours = state.get("heat_hours", self.heat_hours)
        self.export_hours = state.get("export_hours", self.export_hours)
        self.hour_lows = state.get("hour_lows", self.hour_lows)
        if "export_hours" not in state and state.get("exported_at") is not None:
            self.saw_export(state["exported_at"])  # from before the hours were kept
        self.cycles = [list(c) for c in state["recent_cycles"]]
        self.session_powers = list(state.get("session_powers", []))
        self.met_at = state.get("met_at")
        if "panels" in state:
            self.panels.restore(state["panels"])
        self.judge_charging_power()
