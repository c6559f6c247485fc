"""EV charging session detector: a pure, deterministic state machine per meter.

Input: a meter's readings in time order (epoch seconds, whole-house W, register Wh).
Output: transitions ``Started`` -> (``SuspendedEV`` -> ``Updated``)* -> ``Ended``.

How it separates the EV from the house:

* The *house floor* is the trailing minimum of power over the last hour. Cycling appliances
  (AC compressors, ovens, dryers, fridges) fall back to it between cycles; an EV does not.
* A *candidate* starts when power steps up (within ``step_window_s``, two readings at least)
  to at least ``min_ev_power_w`` above the floor; a slow climb (rooftop solar fading, the
  evening's base load) is not a load switching on. It becomes
  a session only if its excess over the floor never drops below the EV range, nor under
  ``low_fraction`` of its own level (under its mean only if it wound down to there: loads
  that rode on top stepping off leave it), for ``confirm_s`` (default 45 min): a water
  heater, oven or AC cycle fails this, an EV passes.
  ``Started`` is then published with the start time of the rising edge, not the confirm time.
* Loads seen cycling in the last ``cycle_lookback_s`` are remembered (``House``). A candidate
  of such a size must hold ``cyclic_confirm_s``, or run ``cyclic_min_s`` and stay off
  ``post_check_s`` (so must every candidate of a running agent new to the meter, ``warms_up``,
  for its first ``warmup_s``: it has not seen the house's appliances cycle yet), unless a
  load of its own size cycled on top of it (``stack_min_count`` times, each for
  ``stack_min_s``, an AC's cycle): an AC does not cycle on top of itself. If the load a
  candidate began with switches off while a later one remains (an EV plugged in while the AC
  ran), the candidate follows the later one, though a third load rose over both and left
  since (an oven's element over the AC and the EV). Of two loads of about one size
  (``same_size_tolerance``), which switched off is told by how long each ran against the
  runs of that size remembered at this time of day, not by a few percent of size. A held-back
  candidate whose excess then tapers off over minutes is an EV (a filling battery winds its
  charge down; an appliance stops in a step). So is one whose own *trend* (the sum of its small
  changes, other loads' steps left out) wound down by most of its level and went flat, though
  an AC ran on top through the taper or runs on after it: it ends where the taper did.
  At the house's charging power (once known), one that wound down to its stop over two
  readings or more (a charger ramping its current down at its limit) is not undone by a load
  of its size coming back.
* Offline (``follows_loads_under``), a load in the floor under a candidate (the floor above the
  house's floor over ``deep_floor_window_s``: the AC running through a hot afternoon) that
  switches off lowers the candidate's base instead of ending it, when power falls by no more
  than that load, under the candidate's level but not away. Not where the house exported in
  that floor's hours, or exports at this hour lately: its floor there is the sun's.
* At coarse resolution (``coarse_interval_s``) a candidate whose interval means rise and fall
  with a duty cycle is a compressor: a charger's means hold its level (unless its lowest
  interval is the house's charging power: that charger, a load cycling on top).
* While charging, EV power = excess over the pre-session floor, capped near the session's
  confirmed level (``level_drift``), so appliances riding on top of the EV are not counted;
  once a load on top switches off for a while, the steady level left shows the EV's own
  power and becomes the cap.
* With rooftop solar, the panels' output estimated from the house's quarter-hour lows is added
  back to each reading (``House.panels``, ``rooftop_solar``; the offline mode adds back its
  whole file's estimate first), and the detector reads the house's own load. Until an
  estimate is made (a running agent's first day and night), and where panels are too small
  to estimate, the rules that follow hold.
  The house's lowest net power at each hour of the day on its last
  ``hour_low_days`` days (read while no load is followed) is about the most the sun takes off
  its load at that hour. A session begun over an export keeps its base no lower than that
  (at dusk the export under it is gone, and the EV's stop shows), and a candidate at the
  house's charging power whose trend climbed is judged on what is left of the climb once
  those lows' rise since it began (the sun fading as on the last days) is taken off.
* When the house's own charging power is known (``House.charging_w``: the offline mode learns it
  from a first run over the whole file), a candidate at that power counts only cyclers within
  ``hint_tolerance`` of it, a resume must come back at about that power, a session
  confirmed with another load on top is capped at it (over it by more than the cap's drift
  where that power is given: offline, or an operator's setting), and a candidate at it that ran over
  ``hint_outlast_s`` (longer than a cycler's runs) is kept when a load its size comes back,
  and so is one that ran ``outlast_factor`` times as long as that cycler's runs at this time of
  day (an AC's night cycles last minutes: a charge that stops without a taper is found);
  one held back at it is not undone by a load well under it coming back (a smaller AC),
  one held back for a cycler's size that is not at it (neither its level nor its fall at its
  stop, over two readings or whole over a charger's ramp down) is not kept for staying off after,
  nor, if not of its size (``cycle_tolerance``), for outlasting the cycler.
  A candidate at that power that began at the minute the house's charging timer starts
  (``House.timer_s``) is the EV, whatever cycles.
  A running agent learns that power from its own last ``house_power_memory`` sessions, once
  ``household_min_sessions`` are in and ``house_power_share`` of them share one power.
* A load larger than any single appliance (``large_load_w``) that came on in one step, with
  nothing rising on top, is confirmed after ``large_confirm_s`` (not, where the house's
  charging power is known, if it is not of that size: two appliances that came on together;
  one of that very power is, whatever rose on top since). Where the house's EV is that large, a
  load of its power rising on top of a candidate's and held as long is the EV, followed from
  its own edge.
* Charging stops when the excess falls under ``low_fraction`` of the level. After a sharp final
  fall the stop is the EV-sized fall that matched the level best (an EV can stop while the AC
  still runs on top; a fall counts whole over the readings a charger ramped its current down in at
  its limit, ``ramp_down_s``, though each reading's part is small), and the EV's energy is what it
  drew until then; after a gradual one the taper is followed below the threshold to the charger's
  last step (a final fall split over two readings is judged whole). A session whose trend tapered
  off while another load keeps the excess up ends where its taper did, its taper counted at the
  EV's winding-down power. A stop shorter than ``pause_max_s`` with a return to the same level is
  a pause (``SuspendedEV`` then ``Updated``); a longer one ends the session at the stop time. A
  second resume, or one that matches a remembered cycler, ends the session and follows the new
  load as a candidate, unless the session was confirmed against that cycler and the load back
  outlasts its runs.
* EV energy comes from the register: register delta over the session minus the house's own
  energy (whole-house power minus EV power), so the base load is removed. Intervals whose
  register delta is missing, negative (reset, rollover, relative register) or implausible use
  power x time instead; a session never uses a zero or missing register baseline, nor a
  register that disagrees with the power readings over the session.

Readings: timestamps are taken as interval starts (a minute mean labelled at its minute), which
fixes how partial first/last intervals are interpolated. A repeated timestamp is ignored, an
older one (out of order or a clock stepped back) is dropped and counted, a gap longer than
``max_gap_s`` (or 2.5 reading intervals) is bridged only when charging continues across it.
"""

from __future__ import annotations

import bisect
import difflib
import math
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from edge_agent.house import House
from edge_agent.interval_mean import IntervalMean
from edge_agent.taper import extend_trend, small_change_climb, tapering_power, wound_down
from edge_agent.time_of_day import DAY_S
from schemas.pleevi import TransactionState

DETECTOR_VERSION = "floor-step/1.32"
_TX_NAMESPACE = uuid.UUID("6f1d8f0e-3c5a-4e1b-9a61-6b0c7e1d2f40")


def transaction_id(asset_id: str, start: float) -> str:
    """A session's id: the same for the same meter and start, after a restart or a replay."""
    return str(uuid.uuid5(_TX_NAMESPACE, f"{asset_id}|{start:.0f}|{DETECTOR_VERSION}"))


@dataclass(frozen=True)
class DetectorConfig:
    min_ev_power_w: float = 1200.0
    # Readings closer than this are judged as their means over it (``IntervalMean``).
    mean_interval_s: float = 10.0
    max_ev_power_w: float = 22_000.0
    floor_window_s: float = 3600.0
    # The house's floor over hours: a floor above it holds a load on for the whole floor
    # window (the AC running through a hot afternoon), which may switch off under a candidate.
    deep_floor_window_s: float = 4 * 3600.0
    plateau_window_s: float = 900.0
    confirm_s: float = 45 * 60.0
    large_load_w: float = 5500.0
    large_confirm_s: float = 15 * 60.0
    low_fraction: float = 0.4
    edge_fraction: float = 0.6
    resume_fraction: float = 0.75
    resume_confirm_s: float = 8 * 60.0
    proven_resume_s: float = 25 * 60.0
    suspend_after_s: float = 5 * 60.0
    pause_max_s: float = 30 * 60.0
    max_gap_s: float = 20 * 60.0
    max_session_s: float = 36 * 3600.0
    cycle_lookback_s: float = 72 * 3600.0
    cycle_min_count: int = 2
    cycle_tolerance: float = 0.25
    cyclic_confirm_s: float = 2.5 * 3600.0
    ramp_down_s: float = 5 * 60.0  # a charger ramping down at its limit: a fall this long
    cyclic_min_s: float = 60 * 60.0
    outlast_factor: float = 2.0  # ... or run this many times its size's runs at this time of day
    outlast_margin_s: float = 2 * 3600.0
    post_check_s: float = 30 * 60.0
    run_through_s: float = 30 * 60.0
    heat_run_s: float = 90 * 60.0  # a held run this long, the AC back after it: heat hours
    heat_margin_h: int = 2
    heat_min_days: int = 2
    # ... on days within this long before: a running agent knows only the days before, so it
    # looks back two weeks (a hot spell's afternoons). The offline mode knows the days after
    # as well and counts days this far on either side instead (``offline.detect``): with two
    # weeks there, more charges on afternoons that were not hot are held as the AC's runs.
    heat_lookback_s: float = 14 * DAY_S
    offline_heat_lookback_s: float = 3 * DAY_S
    heat_memory: int = 8
    stack_tolerance: float = 0.2
    stack_min_s: float = 10 * 60.0  # an AC cycle; a dryer's or oven's heater cycles are shorter
    stack_min_count: int = 2
    # Two loads within this share of one size, one risen on top of the other: which of them
    # switched off is told by how long each ran against its size's runs (a few percent of
    # size is base-load noise), each run's length judged with this slack.
    same_size_tolerance: float = 0.15
    run_slack: float = 0.15
    max_resumes: int = 1
    level_drift: float = 1.03
    step_window_s: float = 120.0
    soft_start_s: float = 60.0  # a charger reaches its power within a minute of switching on
    held_window_s: float = 30 * 60.0
    solar_memory_s: float = 48 * 3600.0
    solar_hours: int = 2
    solar_export_w: float = 100.0
    hour_low_days: int = 3
    drift_fraction: float = 0.3
    ramp_window_s: float = 30 * 60.0  # a variable-speed heat pump's ramp up after it starts
    ramp_start_fraction: float = 0.9  # ... from under this share of its level
    taper_min_s: float = 6 * 60.0
    tapered_confirm_s: float = 30 * 60.0
    taper_step: float = 0.1
    tail_fraction: float = 0.1
    taper_depth: float = 0.45
    taper_window_s: float = 45 * 60.0
    taper_flat_s: float = 5 * 60.0
    taper_rebound: float = 0.06
    # Readings this far apart blur a compressor's cycles into interval means (its off times
    # of 5-30 min no longer fill whole intervals); at 5 min they still do, under its level,
    # and a charge with an AC cycling on top in whole intervals is not a duty cycle.
    coarse_interval_s: float = 10 * 60.0
    coarse_steadiness: float = 0.6
    # The house's own charging power (``House.charging_w``), learnt from this many
    # sessions: offline from a whole file's (``offline._of_the_households_ev``), live from the
    # agent's last ones; the hint_* settings apply once it is known.
    household_min_sessions: int = 4
    # A running agent new to a meter has not seen its house's appliances cycle yet: for this
    # long it holds every candidate as it would a cycler's (``MeterDetector.warms_up``).
    warmup_s: float = 24 * 3600.0
    house_power_memory: int = 20  # the live agent's last sessions it learns the power from
    house_power_share: float = 0.5  # ... once this share of them are at one power
    # A session at under this share of the house's typical session power is another load's.
    household_level_fraction: float = 0.5
    # Offline mode only (a whole file's sessions at once).
    hint_tolerance: float = 0.08
    hint_resume_band: float = 0.15
    hint_outlast_s: float = 2 * 3600.0
    timer_slack_s: float = 3 * 60.0
    timer_min_sessions: int = 3
    schedule_max_w: float = 3000.0
    schedule_slack_s: float = 10 * 60.0
    schedule_min_share: float = 0.6
    schedule_tolerance: float = 0.1
    # A charge lost under other loads (``held_layers``) is one held this long, this far from
    # any session the detector found.
    lost_min_s: float = 90 * 60.0
    lost_apart_s: float = 30 * 60.0
    # ... or one the house's AC (its commonest cycler, of this many runs) cycled on top of,
    # where its EV charges at this power or more (Level 2).
    cycler_min_runs: int = 10
    cycled_on_min_w: float = 2500.0

    @classmethod
    def tuned(cls, overrides: Mapping[str, float]) -> DetectorConfig:
        """The default thresholds with ``overrides`` (by field name) in place, for a utility
        tuning the detector on its own labelled meters. An unknown name, a value that is not a
        finite number >= 0 (a whole one where the field counts), or an EV power range that is
        empty is refused (``ValueError``, naming it)."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, value in overrides.items():
            if name not in known:
                near = difflib.get_close_matches(name, known, n=3)
                hint = f"; did you mean {', '.join(near)}?" if near else ""
                raise ValueError(f"unknown detector threshold {name!r}{hint}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"detector threshold {name}: {value!r} is not a number")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"detector threshold {name}: {value!r} is not a number >= 0")
            counts = isinstance(known[name].default, int)
            if counts and not float(value).is_integer():
                raise ValueError(f"detector threshold {name} counts: {value!r} is not whole")
            values[name] = int(value) if counts else float(value)
        config = replace(cls(), **values)
        if config.min_ev_power_w >= config.max_ev_power_w:
            raise ValueError(
                f"detector thresholds: min_ev_power_w ({config.min_ev_power_w:g}) must be under "
                f"max_ev_power_w ({config.max_ev_power_w:g})"
            )
        return config

    @property
    def version(self) -> str:
        """``DETECTOR_VERSION``, followed by the thresholds that differ from its defaults
        (``+name=value,...``): a session found with tuned thresholds says so."""
        changed = [
            f"{f.name}={getattr(self, f.name):g}"
            for f in fields(self)
            if getattr(self, f.name) != f.default
        ]
        return f"{DETECTOR_VERSION}+{','.join(changed)}" if changed else DETECTOR_VERSION


def threshold_pairs(pairs: list[str]) -> dict[str, float]:
    """``NAME=VALUE`` texts (a command line's) as overrides for ``DetectorConfig.tuned``."""
    overrides: dict[str, float] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            overrides[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{pair!r} is not NAME=VALUE (e.g. confirm_s=2400)") from None
    return overrides


class Phase(StrEnum):
    IDLE = "idle"
    PENDING = "pending"
    POSTCHECK = "postcheck"
    CHARGING = "charging"
    PAUSED = "paused"


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change to publish as a Pleevi transaction."""

    state: TransactionState
    asset_id: str
    transaction_id: str
    timestamp: float
    start_time: float
    stop_time: float | None
    ev_power_w: float
    ev_peak_power_w: float
    ev_energy_wh: float
    meter_energy_wh: float
    confidence: float
    sequence_number: int

    @property
    def duration_h(self) -> float:
        end = self.stop_time if self.stop_time is not None else self.timestamp
        return max(0.0, end - self.start_time) / 3600.0


class _RollingMin:
    """Minimum over a trailing time window (monotonic deque; amortised O(1))."""

    __slots__ = ("items", "window")

    def __init__(self, window: float, items: list[list[float]] | None = None) -> None:
        self.window = window
        self.items: deque[list[float]] = deque(items or [])

    def push(self, t: float, value: float) -> None:
        items = self.items
        while items and items[-1][1] >= value:
            items.pop()
        items.append([t, value])
        horizon = t - self.window
        while items[0][0] < horizon:
            items.popleft()

    def value(self) -> float | None:
        return self.items[0][1] if self.items else None

    def clear(self) -> None:
        self.items.clear()

    def lower(self, by: float) -> None:
        for item in self.items:
            item[1] -= by


@dataclass
class _Session:
    transaction_id: str
    start: float
    base_w: float
    level_w: float
    peak_w: float
    sequence: int = 0
    ev_wh: float = 0.0
    meter_wh: float = 0.0
    house_wh: float = 0.0
    last_ev_w: float = 0.0
    last_high: float = 0.0
    fall_edge: float | None = None
    fall_error: float = 1.0
    fall_ev_wh: float = 0.0  # the EV's energy until that fall (what ran on after was not)
    dip_w: float = 0.0
    own_w: float = 0.0
    low_since: float | None = None
    suspended: bool = False
    resume_since: float | None = None
    excess_sum: float = 0.0
    excess_sq: float = 0.0
    samples: int = 0
    unlimited_level_w: float | None = None
    stacked: int = 0
    resumes: int = 0
    solar: bool = False  # the house exported lately: generation behind the meter
    proven: bool = False  # confirmed against a cycler of its size (it outlasted or stacked)
    recent: list[float] = field(default_factory=list)  # excess of the last hour, for tapers
    trend: list[float] = field(default_factory=list)  # recent without its steps
    tail_w: float = 0.0  # the excess of a taper still winding down after the stop threshold
    # A final fall passed over for an earlier one that matched the level better, judged again
    # whole on the next reading (a charger stopping mid-interval splits its fall in two).
    final_stop: float | None = None
    final_from: float = 0.0
    final_ev_wh: float = 0.0


@dataclass
class MeterDetector:
    """Follows one meter. Feed readings with :meth:`update`; it returns transitions."""

    asset_id: str
    config: DetectorConfig = field(default_factory=DetectorConfig)
    phase: Phase = Phase.IDLE
    last_t: float | None = None
    last_p: float = 0.0
    prev_p: float = 0.0
    last_e: float | None = None
    interval_s: float = 0.0
    history_start: float | None = None
    dropped_readings: int = 0
    floor: _RollingMin = field(init=False)
    deep_floor: _RollingMin = field(init=False)  # kept only where ``follows_loads_under``
    plateau: _RollingMin = field(init=False)
    lately: _RollingMin = field(init=False)  # power just before the reading (step test)
    held: _RollingMin = field(init=False)  # a session's lowest excess of the last half hour
    house: House = field(init=False)  # what it has learnt of the house behind the meter
    means: IntervalMean = field(init=False)  # fast readings, averaged before they are judged
    # A running agent learns the house's charging power from its own sessions' powers (the
    # offline mode from the whole file).
    learns_house_power: bool = True
    # The offline mode, whose sessions are judged together (the house's charging power weeds
    # out false ones), follows a candidate over a load under it switching off
    # (``_floor_load_left``); a running agent does not: it learns the house's power from its
    # own sessions, and one false session teaches it a wrong power.
    follows_loads_under: bool = False
    # A running agent meeting a meter for the first time (not the offline mode, which knows a
    # whole file's cycles): it warms up over ``warmup_s`` from its first reading.
    warms_up: bool = False
    # A running agent estimates a net meter's rooftop PV output from its own last days' lows
    # (``House.panels``) and adds it back to each reading; the offline mode has added it back
    # over the whole file before.
    adds_back_panels: bool = True
    # Candidate (PENDING) state
    cand_start: float = 0.0
    cand_first_excess: float = 0.0
    cand_base: float = 0.0
    # A load in the floor under the candidate, on since before the floor window (its size).
    cand_under: float = 0.0
    cand_excess: list[float] = field(default_factory=list)
    cand_sorted: list[float] = field(default_factory=list)  # cand_excess[1:], kept sorted
    cand_trend: list[float] = field(default_factory=list)  # cand_excess without its steps
    cand_sum: float = 0.0
    cand_meter_wh: float = 0.0
    cand_house_wh: float = 0.0
    cand_stacked: int = 0
    # ``_ramp_so_far`` once its window is over (derived from cand_excess: not in snapshots)
    cand_ramp: tuple[float, float] | None = None
    on_top: list[float] | None = None
    cand_rise: list[float] | None = None
    rise_samples: list[list[float]] = field(default_factory=list)
    # An earlier rise still on when a later one rose over both (the EV plugged in while the
    # AC ran, then an oven's element over the two): followed if the first layer leaves.
    earlier_rise: list[float] | None = None
    earlier_samples: list[list[float]] = field(default_factory=list)
    post_stop: float = 0.0
    post_level: float = 0.0
    # The held run's fall at its stop (from ``post_from``, over the next reading too: a load
    # switching off mid-interval splits its fall): its own power, whatever the base did under
    # it. Or its whole fall is, from where it began (``post_top``, ``_fall_began``) to its
    # lowest (``post_low``) while it went on falling: a charger ramping down at its limit.
    post_from: float = 0.0
    post_fall: float = 0.0
    post_top: float = 0.0
    post_low: float = 0.0
    post_ramped: bool = False  # the held run wound down over readings, as a charger stops
    session: _Session | None = None

    def __post_init__(self) -> None:
        self.house = House(self.config)
        self.floor = _RollingMin(self.config.floor_window_s)
        self.deep_floor = _RollingMin(self.config.deep_floor_window_s)
        self.plateau = _RollingMin(self.config.plateau_window_s)
        self.lately = _RollingMin(self.config.step_window_s)
        self.held = _RollingMin(self.config.held_window_s)
        self.means = IntervalMean(self.config.mean_interval_s)

    # ------------------------------------------------------------------ helpers
    def _max_gap(self) -> float:
        return max(self.config.max_gap_s, 2.5 * self.interval_s)

    def _meter_delta(self, dt: float, energy_wh: float | None) -> float:
        """Register energy over the last interval, or power x time when it is unusable."""
        by_power = max(self.last_p, 0.0) * dt / 3600.0
        if energy_wh is None or self.last_e is None:
            return by_power
        delta = energy_wh - self.last_e
        ceiling = (max(self.last_p, 0.0) + self.config.max_ev_power_w) * dt / 3600.0 * 1.5 + 50
        if delta < 0 or delta > ceiling:
            return by_power
        return delta

    def _transition(self, state: TransactionState, t: float, stop: float | None) -> Transition:
        s = self.session
        assert s is not None
        tr = Transition(
            state=state,
            asset_id=self.asset_id,
            transaction_id=s.transaction_id,
            timestamp=t,
            start_time=s.start,
            stop_time=stop,
            ev_power_w=round(s.last_ev_w if state is not TransactionState.ENDED else 0.0, 1),
            ev_peak_power_w=round(s.peak_w, 1),
            ev_energy_wh=round(self._ev_energy(s), 1),
            meter_energy_wh=round(s.meter_wh, 1),
            confidence=round(self._confidence(s, (stop or t) - s.start), 3),
            sequence_number=s.sequence,
        )
        s.sequence += 1
        return tr

    @staticmethod
    def _ev_energy(s: _Session) -> float:
        if s.solar:
            return s.ev_wh  # the sun may have charged the EV: the import register holds less
        if not 0.5 * s.house_wh <= s.meter_wh <= 2.0 * s.house_wh:
            # The register does not count what the power readings say was used (kWh where Wh
            # was meant, energy per interval rather than a cumulative count, a stuck register).
            return s.ev_wh
        # Register delta minus the house's own energy: the EV's share of what the meter counted.
        from_register = s.meter_wh - max(0.0, s.house_wh - s.ev_wh)
        return min(max(from_register, 0.0), s.meter_wh)

    def _confidence(self, s: _Session, duration: float) -> float:
        mean = s.excess_sum / s.samples if s.samples else s.level_w
        var = max(0.0, s.excess_sq / s.samples - mean * mean) if s.samples else 0.0
        steadiness = 1.0 - min(1.0, math.sqrt(var) / max(mean, 1.0))
        length = min(1.0, duration / 7200.0)
        strength = min(1.0, s.level_w / 3000.0)
        return max(0.05, min(0.99, 0.35 + 0.25 * length + 0.25 * steadiness + 0.15 * strength))

    # ------------------------------------------------------------------ main entry
    def update(self, t: float, power_w: float, energy_wh: float | None = None) -> list[Transition]:
        """Feed one reading; returns the transitions it causes (usually none). Readings closer
        than ``mean_interval_s`` are judged as their means over it (``IntervalMean``)."""
        seen = self.seen_t
        if seen is not None and t <= seen:
            if t < seen:
                self.dropped_readings += 1
            return []
        if math.isnan(power_w):
            self.dropped_readings += 1
            return []
        if self.means.passes(t):
            return self._reading(t, power_w, energy_wh)
        return [tr for r in self.means.add(t, power_w, energy_wh) for tr in self._reading(*r)]

    @property
    def seen_t(self) -> float | None:
        """The time of the last reading fed (a mean may still be filling after it)."""
        return self.means.last_t

    def _reading(self, t: float, power_w: float, energy_wh: float | None) -> list[Transition]:
        if self.adds_back_panels:
            self.house.panels.saw(t, power_w)
            gave = self.house.panels.at(t)
            if gave > 0.0:
                # The house's own load. The import register counts only what it drew beyond
                # the panels: the EV's energy is its power over time while they give.
                power_w, energy_wh = power_w + gave, None
        if power_w <= -self.config.solar_export_w:  # not a meter's offset of a few watts
            self.house.saw_export(t)
        if self.phase is Phase.IDLE:  # the house's own load, no charge in it
            self.house.saw_power(t, power_w)
        out: list[Transition] = []
        if self.last_t is None:
            self._start_history(t, power_w, energy_wh)
            return out
        dt = t - self.last_t
        if self.interval_s <= 0:
            self.interval_s = dt  # the meter's resolution, learnt from its first interval
        if dt > self._max_gap():
            out.extend(self._gap(t, power_w, energy_wh, dt))
            return out
        self.interval_s += (dt - self.interval_s) * 0.1
        meter = self._meter_delta(dt, energy_wh)
        if self.phase is Phase.IDLE:
            self._idle(t, power_w, need_step=True)
        elif self.phase is Phase.PENDING:
            out.extend(self._pending(t, power_w, dt, meter))
        elif self.phase is Phase.POSTCHECK:
            out.extend(self._postcheck(t, power_w))
        else:
            out.extend(self._charging(t, power_w, dt, meter))
        if self.phase in (Phase.IDLE, Phase.PENDING, Phase.POSTCHECK):
            self.floor.push(t, power_w)
        if self.follows_loads_under:
            self.deep_floor.push(t, power_w)
        # Two readings at least: a switch-on split over an interval boundary is one step.
        self.lately.window = max(self.config.step_window_s, 2.5 * self.interval_s)
        self.lately.push(t, power_w)
        self.last_t, self.prev_p, self.last_p = t, self.last_p, power_w
        if energy_wh is not None:
            self.last_e = energy_wh
        return out

    def _start_history(self, t: float, power_w: float, energy_wh: float | None) -> None:
        self.floor.clear()
        self.floor.push(t, power_w)
        self.history_start = t
        if self.warms_up and self.house.met_at is None:
            self.house.met_at = t
        self.last_t, self.last_p, self.last_e = t, power_w, energy_wh
        self.prev_p = power_w
        self.phase = Phase.IDLE

    # ------------------------------------------------------------------ phases
    def _idle(self, t: float, p: float, need_step: bool = False) -> None:
        base = self.floor.value()
        if base is None or self.history_start is None:
            return
        if t - self.history_start < min(900.0, self.config.floor_window_s):
            return  # not enough history to know the house floor
        excess = p - base
        if excess < self.config.min_ev_power_w:
            return
        # A charger switches on in a step. A slow climb above the floor (rooftop solar fading
        # in the afternoon, the evening's base load building up) is not a load switching on.
        before = self.lately.value()
        if need_step and before is not None and p - before < self.config.min_ev_power_w:
            return
        if before is not None and self.house.solar(t):
            # Under solar the trailing minimum lags the net load by kilowatts: the power just
            # before the step is the house's own.
            base = max(base, before)
            excess = p - base
        self._begin_candidate(t, base, excess)

    def _begin_candidate(self, t: float, base: float, excess: float) -> None:
        self.phase = Phase.PENDING
        self.cand_start, self.cand_base = t, base
        deep = self.deep_floor.value()
        # Where the house exports, its floor over hours is the sun's, not a load left on.
        if deep is None or deep < -self.config.solar_export_w or self.house.solar(t):
            self.cand_under = 0.0
        else:
            self.cand_under = max(0.0, base - deep)
        self.cand_first_excess = self.cand_sum = excess
        self.cand_excess = [excess]
        self.cand_sorted = []
        self.cand_trend = []
        self.cand_meter_wh = self.cand_house_wh = 0.0
        self.cand_stacked = 0
        self.cand_ramp = None
        self.on_top = None
        self.cand_rise, self.rise_samples = None, []
        self.earlier_rise, self.earlier_samples = None, []
        self.held.clear()

    def _pending(self, t: float, p: float, dt: float, meter: float) -> list[Transition]:
        cfg = self.config
        excess = p - self.cand_base
        if self._floor_load_left(p, excess):
            excess = p - self.cand_base
        house = max(self.last_p, 0.0) * dt / 3600.0
        left = self._first_layer_left(t, p, excess, self.cand_rise)
        if not left and self._first_layer_left(t, p, excess, self.earlier_rise):
            self.cand_rise, self.rise_samples = self.earlier_rise, self.earlier_samples
            left = True
        if left:
            # The first load stepping off at the end of its taper was an EV's, done charging.
            ended = self._end_if_tapered_off(t, flat_s=0.0)
            if ended:
                return ended
            self._reanchor(t, excess)
        self.cand_meter_wh += meter
        self.cand_house_wh += house
        typical = self.cand_sum / len(self.cand_excess)  # O(1): this runs on every reading
        level = self._candidate_level()
        settled = t - self.cand_start >= 600.0
        # Under its own level the candidate's load is gone. Under its mean only, a load that
        # rode on top of it stepped off (an AC over a Level 1 charge), unless it wound down
        # to there: its own taper, which soon pulls its level down too.
        fell = (
            excess < cfg.min_ev_power_w * 0.7
            or excess > cfg.max_ev_power_w * 1.5
            or (settled and excess < cfg.low_fraction * level)
        )
        under_mean = settled and excess < cfg.low_fraction * typical
        taper = self._taper_start(level) if fell or under_mean else None
        if fell or taper is not None:
            if t - self.cand_start >= cfg.tapered_confirm_s and taper is not None:
                # A battery filling winds its charge down over minutes; an appliance switches
                # off in a step. Whatever cycled lately, this was an EV, at its level before
                # the taper.
                level = self._level_before(taper)
                self.phase = Phase.POSTCHECK  # the whole candidate is past: all of it counts
                stop = self._stop_between(t, p, excess, level)
                return [self._confirm(t, level, 0.0), self._end(t, stop)]
            ended = self._end_if_tapered_off(t, flat_s=0.0)  # under loads stepping on and off
            if ended:
                return ended
            if t - self.cand_start >= cfg.cyclic_min_s and cfg.min_ev_power_w <= level:
                # Long enough, but a cycling appliance of this size ran lately: an EV is not
                # followed by the same load switching on again soon; wait and see.
                self.phase = Phase.POSTCHECK
                self.post_level = level
                self.post_from = max(self.last_p, self.prev_p)
                self.post_top, self.post_low = self._fall_began(), p
                self.post_fall = self.post_from - p
                self.post_stop = self._stop_between(t, p, excess, level)
                self.post_ramped = self._wound_down_to_stop(excess, level)
                return []
            self._drop_candidate(t, p)
            return []
        self._add_excess(excess)
        self.held.push(t, excess)
        edge = self._rising_edge(p, self.cand_base)
        self.cand_stacked += self._same_size_on_top(t, p, self.cand_base, edge)
        if self._rise_still_ramping(t, p):
            self._take_rise_whole(p)
        elif (
            edge is not None
            and edge[0] >= cfg.min_ev_power_w
            and edge[1] >= cfg.min_ev_power_w / 2
            and not self._the_house_ev_rose()  # what cycles on top of it since is not followed
        ):
            # A load rose on top of the candidate's (not the candidate's own split edge).
            if self._still_on(self.cand_rise, self.rise_samples):
                self.earlier_rise, self.earlier_samples = self.cand_rise, self.rise_samples
            self.cand_rise, self.rise_samples = [t, *edge], []
        elif self._completes_rise(p):
            self._take_rise_whole(p)
        if self.earlier_rise is not None:
            self.earlier_samples.append([excess, meter, house])
            # Judged once power settled: mid-fall, the first layer leaving looks the same.
            settled = abs(self.last_p - p) <= 0.1 * excess
            if settled and not self._still_on(self.earlier_rise, self.earlier_samples[-1:]):
                self.earlier_rise, self.earlier_samples = None, []
        if self.cand_rise is not None:
            self.rise_samples.append([excess, meter, house])
            if self._house_ev_rose_on_top(t):
                # Followed from its own rising edge, the load underneath left out of it.
                size = self.cand_rise[1]
                self._reanchor(t, excess)
                return [self._confirm(t, size, size)]
        age = t - self.cand_start
        if age < cfg.large_confirm_s or (age < cfg.confirm_s and typical < cfg.large_load_w):
            return []
        level = self._candidate_level()
        if age < cfg.confirm_s and not self._one_large_step(level):
            return []
        if (
            level < cfg.min_ev_power_w
            or level > cfg.max_ev_power_w
            or self._drifting(level)
            or self._duty_cycling()
        ):
            self._drop_candidate(t, p)  # what is on now may be a load that rose on top of it
            return []
        if self._ramped_up(level):
            # What is on now is that modulating load: a fresh candidate needs a step. Nor is
            # it remembered as a cycler: it did not cycle.
            self.phase = Phase.IDLE
            return []
        # New to the house, it may be an appliance whose cycles it has not seen yet.
        cycling = self.house.cycling_nearby(t, level) or self.house.new_to_it(t)
        if (
            cycling
            and not self.house.on_its_timer(self.cand_start, level)
            and self.cand_stacked < cfg.stack_min_count
            and (
                t - self.cand_start < cfg.cyclic_confirm_s
                or self._ran_through_the_heat(level)
                # Outlasting a cycler does not make a load off the house's EV's size the EV
                # (an AC's run through the heat lasts hours).
                or self.house.off_its_charging_size(level)
            )
            and not self._outlasted_its_cyclers(t, level)
        ):
            if int(t // 60) != int((self.last_t or t) // 60):  # judged once a minute
                return self._end_if_tapered_off(t)
            return []  # a cycling appliance of this size ran lately: wait for more evidence
        started = self._confirm(t, level, min(excess, level))
        assert self.session is not None
        self.session.proven = cycling  # it outlasted that cycler, or one ran on top of it
        return [started]

    def _postcheck(self, t: float, p: float) -> list[Transition]:
        excess = p - self.cand_base
        if self.last_t is not None and self.last_t - self.post_stop <= self.interval_s:
            self.post_fall = max(self.post_fall, self.post_from - p)
        still_falling = self.last_p == self.post_low and p < self.post_low
        if still_falling and t - self.post_stop <= self.config.taper_min_s:
            self.post_low = p
        # At the house's charging power, a run that outlasted a cycler's, or one that wound down
        # to its stop as a charger does, is not undone by a load of its size coming back.
        proven = self.house.at_charging_power(self.post_level) and (
            self.post_ramped
            or (
                self.post_stop - self.cand_start >= self.config.hint_outlast_s
                and not self._ran_through_the_heat(self.post_level)
            )
        )
        back = excess >= (1 - self.config.cycle_tolerance) * self.post_level
        if back and not proven and not self._under_the_houses_charging_power(excess):
            if self.post_stop - self.cand_start >= self.config.heat_run_s:
                self.house.ran_through_at(self.cand_start, self.post_stop)
            self._abandon_candidate(t)  # the same load is back: a cycling appliance
            self._begin_candidate(t, self.cand_base, excess)
            return []
        if t - self.post_stop < self.config.post_check_s:
            return []
        if self.house.charging_w is not None and not self._held_run_at_charging_power():
            # Held back for a cycler's size, it proved nothing by staying off; with the house's
            # own charging power known (offline, from the whole file) and this not it, it was
            # another load's long run (back-to-back water heater recoveries, a long AC cycle).
            # Its level is its excess over the floor, which a load under it switching off
            # lowers; its fall at its stop is its own power.
            self._drop_candidate(t, p)
            return []
        started = self._confirm(t, self.post_level, 0.0)
        ended = self._end(t, self.post_stop)
        return [started, ended]

    def _under_the_houses_charging_power(self, excess: float) -> bool:
        """The held run was at the house's charging power and the load back is well under it
        (``hint_resume_band``): another load (a smaller AC's next cycle), not the same one."""
        power = self.house.charging_w
        if power is None or not self.house.at_charging_power(self.post_level):
            return False
        return excess < (1 - self.config.hint_resume_band) * power

    def _held_run_at_charging_power(self) -> bool:
        """The held run's level, or its fall at its stop (its own power whatever the base did
        under it: over two readings, or whole over a charger's ramp down), is the house's
        charging power."""
        return (
            self.house.at_charging_power(self.post_level)
            or self.house.at_charging_power(self.post_fall)
            or self._whole_fall_at_charging_power()
        )

    def _whole_fall_at_charging_power(self) -> bool:
        """The held run's whole fall, over the readings it went on falling, is the house's
        charging power. Readings as far apart as a charger's ramp down lasts hold it in two
        (``post_fall``): not judged again."""
        fine = self.interval_s < self.config.taper_min_s
        return fine and self.house.at_charging_power(self.post_top - self.post_low)

    def _floor_load_left(self, p: float, excess: float) -> bool:
        """A load in the floor under the candidate (``cand_under``, on since before the floor
        window: the AC running through a hot afternoon) switched off: power fell in a step by
        no more than that load, to under the candidate's level but not away (its own load is
        still on). The candidate's base falls by what it lost; its excess is what it was."""
        cfg = self.config
        if not self.follows_loads_under or self.cand_under < cfg.min_ev_power_w:
            return False
        if len(self.cand_sorted) < 3 or excess <= 0.5 * cfg.min_ev_power_w:
            return False  # fell away: its own load may have stopped, as likely as the one under
        if self.interval_s >= cfg.coarse_interval_s:
            return False  # interval means: a fall may be a compressor's duty cycle in them
        shortfall = self._candidate_level() - excess
        drop = max(self.last_p, self.prev_p) - p
        if shortfall < 0.5 * cfg.min_ev_power_w or drop < 0.8 * shortfall:
            return False
        if shortfall > (1 + cfg.cycle_tolerance) * self.cand_under:
            return False
        self.cand_base -= shortfall
        self.cand_under -= shortfall
        return True

    def _fall_began(self) -> float:
        """The power before the candidate's fall to now began: its readings walked back while
        they were higher still, over ``taper_min_s`` at most (a longer wind-down is a taper)."""
        xs = self.cand_excess
        earliest = max(0, len(xs) - 1 - round(self.config.taper_min_s / max(self.interval_s, 1.0)))
        k = len(xs) - 1
        while k > earliest and xs[k - 1] > xs[k]:
            k -= 1
        return max(self.cand_base + xs[k], self.last_p, self.prev_p) if xs else self.last_p

    def _the_house_ev_rose(self) -> bool:
        """The load that rose on top of the candidate's is larger than any one appliance and of
        the house's own charging power (once known), over a load that is not."""
        rise = self.cand_rise
        hint = self.house.charging_w
        if rise is None or hint is None or hint < self.config.large_load_w:
            return False
        _, size, under = rise
        return self.house.at_charging_power(size, self.config.hint_resume_band) and not (
            self.house.at_charging_power(under, self.config.cycle_tolerance)
        )

    def _house_ev_rose_on_top(self, t: float) -> bool:
        """The house's EV rose on top of the candidate's load (an AC's cycle, a water heater)
        and has held for ``large_confirm_s``, as a large load that came on in one step alone
        must: it is followed from its own rising edge."""
        rise = self.cand_rise
        if rise is None or not self._the_house_ev_rose():
            return False
        began, size, _ = rise
        held = min(sample[0] for sample in self.rise_samples) >= 0.8 * size
        return held and t - began >= self.config.large_confirm_s

    def _one_large_step(self, level: float) -> bool:
        """A load larger than any one household appliance that came on in one step (a split
        edge allowed) with nothing rising on top: an EV. Two appliances together (water
        heater and AC) come on in two steps, or, now and then, in the same minute: in a house
        whose charging power is known, a load not of its size is not taken on this evidence,
        and a load of its very power is, whatever rose on top of it since (an AC's cycle)."""
        first = max(self.cand_excess[:2])
        if self.house.off_its_charging_size(level):
            return False
        alone = self.cand_rise is None or self.house.at_charging_power(level)
        return level >= self.config.large_load_w and alone and first >= 0.8 * level

    def _taper_start(self, level: float) -> int | None:
        """Where the candidate's excess began to wind down through intermediate values over
        minutes (an EV's charge tapering as its battery fills), if it did rather than falling
        in a step."""
        xs = self.cand_excess
        dt = max(self.interval_s, 1.0)
        # Judged over the last 45 min only: the sun rising under a long AC run also lowers
        # net power smoothly, but far more slowly. Nor is the walk back taken further: what
        # lies before would change neither the top nor the answer (O(45 min) a reading, not
        # O(the candidate), for a Level 1 charge held for hours at 1 s).
        earliest = max(0, len(xs) - 1 - round(2700 / dt))
        j = len(xs) - 1
        while j > earliest and -0.05 * level <= xs[j - 1] - xs[j] <= 0.15 * level:
            j -= 1
        top = xs[j]
        if (len(xs) - j) * dt < self.config.taper_min_s or top - xs[-1] < 0.3 * top:
            return None
        return max((k for k in range(j, len(xs)) if xs[k] >= 0.9 * top), default=j)

    def _end_if_tapered_off(self, t: float, flat_s: float | None = None) -> list[Transition]:
        """A taper under the candidate that ended ``flat_s`` ago (see ``wound_down``) shows an
        EV, perhaps under another load, done charging: reported at its level before the taper,
        up to the taper's end (what runs on is another load's). Else nothing."""
        if self.house.solar(self.cand_start):
            return []  # the sun rising under a long run also lowers net power smoothly
        dt = max(self.interval_s, 1.0)
        found = wound_down(self.cand_trend, self._candidate_level(), dt, self.config, flat_s)
        if found is None or found[1] * dt < self.config.tapered_confirm_s:
            return []
        top, bottom = found
        level = self._level_before(top)
        stop = round(t - (len(self.cand_excess) - 1 - bottom) * dt)
        del self.cand_excess[bottom + 1 :]
        for k in range(top, bottom + 1):
            own = tapering_power(self.cand_trend, level, top, k)
            self.cand_excess[k] = min(self.cand_excess[k], own)
        self.phase = Phase.POSTCHECK  # the whole (trimmed) candidate is past: all of it counts
        return [self._confirm(t, level, 0.0), self._end(t, stop)]

    def _wound_down_to_stop(self, excess: float, level: float) -> bool:
        """The candidate fell to ``excess`` through two readings or more of intermediate,
        falling values: a charger ramping its current down, not a compressor's one step (a
        minute's mean splits that over two readings at most)."""
        xs = self.cand_excess
        n, k, prev = 0, len(xs) - 1, excess
        while k >= 1 and prev + 0.03 * level <= xs[k] < 0.9 * level:
            n, prev, k = n + 1, xs[k], k - 1
        return n >= 2

    def _level_before(self, taper: int) -> float:
        """The candidate's level before its taper began at reading ``taper``."""
        before = sorted(self.cand_excess[1 : taper + 1]) or [self._candidate_level()]
        return before[len(before) // 10]

    def _drifting(self, level: float) -> bool:
        """With solar behind the meter, a candidate whose trend (its small changes only: loads
        stepping on top, a cloud's step and its own partial first reading left out) climbed by
        ``drift_fraction`` of its level since its first quarter hour is the sun fading under it,
        not a charger's flat draw."""
        trend = self.cand_trend
        if not trend or not self.house.solar(self.cand_start):
            return False
        early = round(self.config.plateau_window_s / max(self.interval_s, 1.0))
        climb = trend[-1] - min(trend[: early + 1])
        faded = (
            self.house.sun_faded(self.cand_start, self.last_t or self.cand_start)
            if self.house.at_charging_power(level)
            else 0.0
        )
        return climb - faded > self.config.drift_fraction * level

    def _ramped_up(self, level: float) -> bool:
        """A charger reaches its level within a minute of switching on (a soft start); a
        variable-speed heat pump starts at its lowest speed and ramps up for a quarter hour. A
        candidate that drew under its level just after its first ``step_window_s`` and then
        climbed through small changes (loads switching on top left out) by
        ``drift_fraction`` of its level, and by ``min_ev_power_w`` at least, within
        ``ramp_window_s`` is a modulating load, not a charger."""
        cfg = self.config
        if self.interval_s >= cfg.coarse_interval_s:
            return False  # a quarter hour's means hide the ramp
        ramp = self.cand_ramp or self._ramp_so_far()
        if self.cand_ramp is None and (self.last_t or 0.0) - self.cand_start >= cfg.ramp_window_s:
            self.cand_ramp = ramp  # the window is over; a held candidate asks every reading
        start_w, climb = ramp
        return start_w < cfg.ramp_start_fraction * level and climb >= max(
            cfg.drift_fraction * level, cfg.min_ev_power_w
        )

    def _ramp_so_far(self) -> tuple[float, float]:
        """The candidate's draw just after its first ``step_window_s`` (the median) and what
        it climbed by from there through small changes within ``ramp_window_s``, judged a
        minute apart: at 1 s a charger's soft start (up to a minute) is many small changes
        too, but a minute's change holds all of it."""
        cfg = self.config
        dt = max(self.interval_s, 1.0)
        k0 = round(cfg.step_window_s / dt)
        after_start = sorted(self.cand_excess[k0 : 2 * k0 + 1]) or [math.inf]
        minute = max(1, round(60.0 / dt))
        window = self.cand_excess[k0 : round(cfg.ramp_window_s / dt) + 1 : minute]
        return after_start[len(after_start) // 2], small_change_climb(
            window, cfg.min_ev_power_w / 2
        )

    def _duty_cycling(self) -> bool:
        """At coarse resolution a compressor's cycles blur into interval means that rise and
        fall with its duty cycle; a charger's means hold its level (loads on top only add).
        A candidate whose lowest full interval falls well below its upper quartile is cycling,
        unless that lowest interval is the house's charging power (once known): the charger,
        with the AC cycling on top of it in whole intervals."""
        if self.interval_s < self.config.coarse_interval_s:
            return False
        body = self.cand_sorted  # the first, partial interval left out
        if len(body) < 3 or self.house.at_charging_power(body[0]):
            return False
        return body[0] < self.config.coarse_steadiness * body[3 * len(body) // 4]

    def _add_excess(self, excess: float) -> None:
        # The first reading is a partial edge; the sorted body gives the level in O(1) (at
        # 1 s resolution a held-back candidate asks for it on every reading).
        if self.cand_excess:
            bisect.insort(self.cand_sorted, excess)
            extend_trend(self.cand_excess, self.cand_trend, excess, self._trend_step())
        self.cand_excess.append(excess)
        self.cand_sum += excess

    def _trend_step(self) -> float:
        return self.config.taper_step * self._candidate_level()

    def _candidate_level(self) -> float:
        body = self.cand_sorted or self.cand_excess
        return body[len(body) // 10]

    def _confirm(self, t: float, level: float, ev_now: float) -> Transition:
        dt = self.interval_s
        start = self._interpolated_start(level)
        own = level
        hint = self.house.charging_w
        if hint is not None and level > (1 + self._over_the_houses_power()) * hint:
            own = hint  # another load ran on top through the confirmation
        counted = self.cand_excess if self.phase is Phase.POSTCHECK else self.cand_excess[:-1]
        ev_wh = sum(min(x, own) for x in counted) * dt / 3600.0
        self.session = s = _Session(
            transaction_id=transaction_id(self.asset_id, start),
            start=start,
            base_w=self.cand_base,
            level_w=level,
            peak_w=own,
            ev_wh=ev_wh,
            meter_wh=self.cand_meter_wh,
            house_wh=self.cand_house_wh,
            last_ev_w=min(ev_now, own),
            last_high=t,
            stacked=self.cand_stacked,
            solar=self.house.solar(t),
            own_w=own if own < level else 0.0,
        )
        for x in self.cand_excess[1:]:
            s.excess_sum += min(x, level * 1.5)
            s.excess_sq += min(x, level * 1.5) ** 2
            s.samples += 1
        first = max(0, len(self.cand_excess) - self._taper_memory())
        s.recent = self.cand_excess[first:]
        s.trend = self.cand_trend[first : len(self.cand_excess) - 1]
        for rolling in (self.plateau, self.held):
            rolling.clear()
            recent = self.cand_excess[-int(rolling.window / max(dt, 1)) - 1 :]
            for i, x in enumerate(recent):
                rolling.push(t - dt * (len(recent) - 1 - i), x)
        self.phase = Phase.CHARGING
        return self._transition(TransactionState.STARTED, t, None)

    def _over_the_houses_power(self) -> float:
        """How far over the house's charging power a session may be confirmed and still be
        counted at its own level: the plateau's drift (``level_drift``) where that power is
        given, not learnt from these very sessions (the offline mode's whole file, an
        operator's ``EDGE_CHARGING_POWER_W``): a session over it by more had another load on
        top (an AC's fan, a fridge). A running agent learning the power from its own sessions'
        levels allows its wider ``hint_tolerance``."""
        cfg = self.config
        given = not self.learns_house_power or self.house.known_w is not None
        return cfg.level_drift - 1.0 if given else cfg.hint_tolerance

    def _abandon_candidate(self, t: float) -> None:
        """Forget a candidate; remember it as a cycle of some appliance if it lasted a while."""
        self.phase = Phase.IDLE
        if t - self.cand_start >= 180.0 and self.cand_sorted:
            self.house.cycles.append([t, self._candidate_level(), t - self.cand_start])
        self.house.forget_cycles_before(t - self.config.cycle_lookback_s)

    def _drop_candidate(self, t: float, p: float) -> None:
        """Forget the candidate and look at what is on now, as a fresh candidate may begin."""
        self._abandon_candidate(t)
        self._idle(t, p)

    def _outlasted_its_cyclers(self, t: float, level: float) -> bool:
        """At the house's charging power (once known), the candidate has run
        ``outlast_factor`` times as long as any load of its size that cycled lately at this time
        of day (``outlast_margin_s``; at any time, if none did): an AC's night cycles last
        minutes, a charge that stops without a taper an hour. Not a run that may be the AC
        running through the heat (see ``_ran_through_the_heat``)."""
        if (
            not self.house.at_charging_power(level)
            or self._ran_through_the_heat(level)
            or self.house.solar(self.cand_start)  # the sun fading under a load draws it out too
        ):
            return False
        near = self.house.run_lengths_near(self.cand_start, level)
        anytime = [lasted for _, lasted in self.house.runs_of_size(level)]
        longest = max(near or anytime or [math.inf])
        return t - self.cand_start >= self.config.outlast_factor * longest

    def _ran_through_the_heat(self, level: float) -> bool:
        """A cycler of this size switched off shortly before the candidate began, or it began
        at the hours the AC ran through the heat on other days, and no load of its size cycled
        on top since: on a hot afternoon, the AC itself running through the heat. However long
        it runs, it must then stay off (``post_check_s``) to count."""
        if self.cand_stacked:
            return False
        since = self.cand_start - self.config.run_through_s
        return self.house.in_the_heat_hours(self.cand_start) or any(
            since < c[0] <= self.cand_start for c in self.house.cycles_of_size(level)
        )

    def _same_size_on_top(
        self, t: float, p: float, base: float, edge: tuple[float, float] | None
    ) -> bool:
        """True once a load as large as the one under watch ran on top of it for minutes and
        switched off while it ran on: the watched load cannot be that one (an AC compressor
        does not cycle on top of itself). Short thermostat blips (ovens, ranges) do not count."""
        cfg = self.config
        tol = cfg.stack_tolerance
        now = p - base
        top = self.on_top
        if top is not None:
            began, under, level = top
            if now < (1 - tol) * under:
                self.on_top = None  # the load underneath fell: no evidence
                return False
            if abs(p - self.last_p) > 0.1 * now:
                return False  # mid-step: judge once power settles
            # Judged by the fall, not the rise: a compressor starts below its running power.
            drop = level - p
            if drop < 0.5 * cfg.min_ev_power_w:
                top[2] = p  # still on top
                return False
            self.on_top = None
            return (1 - tol) * now <= drop <= (1 + tol) * now and t - began >= cfg.stack_min_s
        if edge is not None and edge[1] >= cfg.min_ev_power_w:
            self.on_top = [t, edge[1], p]
        return False

    def _rising_edge(self, p: float, base: float) -> tuple[float, float] | None:
        """(rise, excess before it) when power just stepped up onto a steady level."""
        last, prev = self.last_p, self.prev_p
        # The level underneath must be steady: a rising edge split over two readings (a load
        # switching on mid-interval) is one load, not one on top of another.
        steady = abs(last - prev) <= 0.1 * max(last - base, 0.0)
        # The second reading of a split step carries a good part of it; a reading after a
        # completed step does not (it would count the same load again, over itself).
        split = prev <= last <= p and p - last >= 0.25 * (p - prev)
        before = last if steady else prev if split else None
        if before is None or p - before < 0.5 * self.config.min_ev_power_w:
            return None
        return p - before, before - base

    def _rise_still_ramping(self, t: float, p: float) -> bool:
        """Power climbing further within ``soft_start_s`` of a load's rise on top of the
        candidate's is that load's soft start, spread over readings finer than a minute (a
        charger's at 10 s, from a tenth of its power): its whole step from before it is its
        size, not each reading's part taken for a load of its own (a 7 kW charger read as the
        2.9 kW of its first 10 s)."""
        rise = self.cand_rise
        if rise is None or self.last_t is None or p <= self.last_p:
            return False
        began, size, under = rise
        within = self.last_t >= began and t - began < self.config.soft_start_s
        return within and p - self.cand_base - under > size

    def _completes_rise(self, p: float) -> bool:
        """The reading after a load rose on top of the candidate's carries the rest of its step:
        a load switching on late in an interval shows most of its step in that interval's mean
        and the rest in the next, too little to be judged a split edge (``_rising_edge``), but
        enough to take its size for another load's (a 6.8 kW charger read as 5.3 kW)."""
        rise = self.cand_rise
        if rise is None or rise[0] != self.last_t:
            return False
        rest = p - self.last_p
        return 0.0 < rest < 0.5 * rise[1]

    def _take_rise_whole(self, p: float) -> None:
        """The load that rose on top of the candidate's is all of its step up to ``p``: from the
        power before it rose (the candidate's base and the layer under it) to now."""
        assert self.cand_rise is not None
        self.cand_rise[1] = p - self.cand_base - self.cand_rise[2]

    @staticmethod
    def _still_on(rise: list[float] | None, samples: list[list[float]]) -> bool:
        """The load that rose on top of the candidate's has stayed on since."""
        if rise is None or not samples:
            return False
        _, size, under = rise
        return min(sample[0] for sample in samples) >= under + 0.5 * size

    def _first_layer_left(
        self, t: float, p: float, excess: float, rise: list[float] | None
    ) -> bool:
        """The load the candidate began with switched off, and what remains is ``rise``, a
        load that rose later on top of it (an EV plugged in while the AC ran): follow that one
        instead."""
        if rise is None or t - self.cand_start < 180.0:
            return False
        _, size, under = rise
        # Judged once power has settled after the fall: mid-fall, a load switching off
        # mid-interval leaves a partial level that could match anything.
        drop = self.prev_p - p
        cfg = self.config
        if not (
            abs(self.last_p - p) <= 0.1 * excess
            and drop >= 0.5 * cfg.min_ev_power_w
            and abs(excess - size) <= cfg.cycle_tolerance * size
        ):
            return False
        same_size = abs(size - under) <= cfg.same_size_tolerance * size
        runs = self._run_lengths_near(t, size) if same_size else None
        if runs is not None:
            # Two loads of about one size: which left is told by how long each ran, not by a
            # few percent of size. Of a run as long as its size's runs at this time of day and
            # one that is not, the first is the cycler switching off: an AC's cycle over a
            # charge, or the cycle a charge began under.
            lo, hi = runs[0] / (1 + cfg.run_slack), runs[1] * (1 + cfg.run_slack)
            first, later = t - self.cand_start, t - rise[0]
            if first > hi and lo <= later <= hi:
                return False
            if later < lo <= first <= hi:
                return True
        return abs(drop - under) < abs(drop - size) and abs(excess - size) < abs(excess - under)

    def _run_lengths_near(self, t: float, size: float) -> tuple[float, float] | None:
        """The shortest and longest remembered runs of a load of ``size`` that began at about
        this time of day (``outlast_margin_s``), if a few did (``cycle_min_count``)."""
        near = [lasted for lasted in self.house.run_lengths_near(t, size) if math.isfinite(lasted)]
        return (min(near), max(near)) if len(near) >= self.config.cycle_min_count else None

    def _reanchor(self, t: float, now: float) -> None:
        assert self.cand_rise is not None
        began, _, under = self.cand_rise
        samples = self.rise_samples
        if began - self.cand_start >= 180.0:
            self.house.cycles.append([t, under, began - self.cand_start])
        self._begin_candidate(began, self.cand_base, now)
        self.cand_excess, self.cand_sum, self.cand_trend = [], 0.0, []
        for excess, meter, house in samples:
            # Until it fell, the first layer ran underneath: the later load's own excess is
            # what is left above it (readings after the fall are already its own).
            self._add_excess(excess - under if excess - under >= 0.5 * now else excess)
            self.cand_meter_wh += meter
            self.cand_house_wh += house
        self.cand_first_excess = self.cand_excess[0] if self.cand_excess else now

    def _interpolated_start(self, level: float) -> float:
        fraction = min(1.0, max(0.0, self.cand_first_excess / level))
        return round(self.cand_start + self.interval_s * (1.0 - fraction))

    def _charging(self, t: float, p: float, dt: float, meter: float) -> list[Transition]:
        cfg = self.config
        s = self.session
        assert s is not None
        excess = p - s.base_w
        # Account the interval that just ended (the previous reading covers it).
        s.meter_wh += meter
        s.house_wh += max(self.last_p, 0.0) * dt / 3600.0
        s.ev_wh += s.last_ev_w * dt / 3600.0
        out: list[Transition] = []
        high = excess >= max(cfg.low_fraction * s.level_w, cfg.min_ev_power_w * 0.5)

        if self.phase is Phase.CHARGING:
            if (
                s.solar
                and (low := self.house.lowest_at_this_hour(t)) is not None
                and low > s.base_w
            ):
                # The export under the session fades with the sun: at dusk the base can be no
                # lower than the house went at this hour lately.
                excess -= low - s.base_w
                self.held.lower(low - s.base_w)  # excesses over the new base
                self.plateau.lower(low - s.base_w)
                s.base_w = low
                high = excess >= max(cfg.low_fraction * s.level_w, cfg.min_ev_power_w * 0.5)
            held = self.held.value()
            if s.solar and high and held is not None:
                left = excess - (held - s.level_w)
                if left <= (1 - cfg.edge_fraction) * s.level_w:
                    # With solar behind the meter the house's net load drifts under a session
                    # (up as the sun fades). An EV-sized fall below all the last half hour held
                    # is the EV stopping, though the excess over the old base still looks high;
                    # what is left is the house, which becomes the base.
                    s.base_w = p - max(left, 0.0)
                    excess, high = max(left, 0.0), False
            # Over two readings (a load switching mid-interval splits its step in two), or over
            # the readings a charger ramped down in.
            drop = max(max(self.last_p, self.prev_p) - p, self._ramped_down(s, excess))
            if drop >= cfg.edge_fraction * s.level_w:
                # Of several EV-sized falls (EV and AC stopping), the EV's is the one whose
                # size matches the EV's level best.
                error = abs(drop - s.level_w) / s.level_w
                if s.fall_edge is None or error < s.fall_error:
                    s.fall_edge, s.fall_error, s.fall_ev_wh = t, error, s.ev_wh
            elif p - min(self.last_p, self.prev_p) >= cfg.edge_fraction * s.level_w or (
                s.fall_edge is not None
                and t - s.fall_edge >= cfg.cyclic_confirm_s
                and not self.house.in_the_heat_hours(s.fall_edge)
            ):
                # What stayed on after an earlier fall, held as long as a charge is held against
                # a cycler of its size and outside the AC's heat hours, is the EV still charging:
                # that fall was another load's.
                s.fall_edge = None
            if high:
                self._follow_dips(s, excess)
                self.plateau.push(t, excess)
                self.held.push(t, excess)
                floor = self.plateau.value() or s.level_w
                # The plateau may lift the level a little (a slow ramp), never by a whole
                # appliance running on top for a quarter of an hour (an AC on a hot evening).
                level = s.own_w or max(s.level_w, min(floor, s.level_w * cfg.level_drift))
                if t - s.start >= cfg.plateau_window_s and level <= cfg.max_ev_power_w:
                    s.peak_w = max(s.peak_w, level)
                # Under a power limit the cap stays at the EV's own level, so a charger that
                # ignores the limit shows as drawing more than it.
                s.last_ev_w = min(excess, max(level, s.unlimited_level_w or 0.0))
                s.last_high = t
                edge = self._rising_edge(p, s.base_w)
                s.stacked += self._same_size_on_top(t, p, s.base_w, edge)
                s.excess_sum += min(excess, s.level_w * 1.5)
                s.excess_sq += min(excess, s.level_w * 1.5) ** 2
                s.samples += 1
                if t - s.start > cfg.max_session_s:
                    out.append(self._end(t, t))
                elif (tapered := self._follow_trend(t, s, excess)) is not None:
                    out.append(self._end_tapered(t, s, *tapered))
                return out
            # Charging stopped. A sharp final fall may be another load's (the EV stopped under a
            # running AC earlier): take the EV-sized fall that matched its level best. A gradual
            # end is the EV's own taper.
            stop = self._stop_between(t, p, excess, s.level_w)
            final_drop = max(self.last_p, self.prev_p) - p
            now_error = abs(final_drop - s.level_w) / s.level_w
            if (
                s.fall_edge is not None
                and s.fall_edge < t
                and final_drop >= cfg.edge_fraction * s.level_w
                and s.fall_error < now_error
            ):
                s.final_stop, s.final_from = stop, max(self.last_p, self.prev_p)
                s.final_ev_wh, s.ev_wh = s.ev_wh, s.fall_ev_wh
                stop = s.fall_edge
            s.low_since = stop
            self.on_top = None
            s.last_ev_w = max(0.0, min(excess, s.level_w)) if stop >= t else 0.0
            gradual = final_drop < cfg.edge_fraction * s.level_w and stop != s.fall_edge
            s.tail_w = excess if gradual and excess >= cfg.tail_fraction * s.level_w else 0.0
            self.phase = Phase.PAUSED
            s.suspended = False
            s.resume_since = None
            return out

        # PAUSED
        assert s.low_since is not None
        if s.final_stop is not None:
            whole = s.final_from - p
            if abs(whole - s.level_w) / s.level_w < s.fall_error:
                s.low_since = s.final_stop  # the final fall, whole, is the EV's after all
                s.ev_wh = s.final_ev_wh
            s.final_stop = None
        band_low, band_high = cfg.resume_fraction * s.level_w, (2 - cfg.resume_fraction) * s.level_w
        hint = self.house.charging_w
        if hint is not None and self.house.at_charging_power(s.level_w):
            # The house's charging power is known: only a load of that size resumes.
            band_low, band_high = (
                (1 - cfg.hint_resume_band) * hint,
                (1 + cfg.hint_resume_band) * hint,
            )
        resumed = max(band_low, cfg.min_ev_power_w * 0.7) <= excess <= band_high or (
            s.resume_since is not None and excess >= cfg.resume_fraction * s.level_w
        )
        if resumed:
            if s.resume_since is None:
                s.resume_since = t
            s.last_ev_w = min(excess, s.level_w)
            back_for = t - s.resume_since
            if back_for < min(cfg.resume_confirm_s, cfg.pause_max_s):
                return out
            cycling = self.house.cycling_nearby(t, s.level_w)
            if cycling and s.proven and back_for < min(cfg.proven_resume_s, cfg.pause_max_s):
                # Proven against the cycler of its size: it resumes once the load back has
                # outlasted that cycler's runs.
                return out
            # Off and on again at the same level is also how a cycling appliance looks.
            self.house.cycles.append([t, s.level_w, s.low_since - s.start])
            if (cycling and not s.proven) or s.resumes >= cfg.max_resumes:
                return self._restart_candidate(t, p, s)
            s.resumes += 1
            s.recent, s.trend = [], []
            self.phase = Phase.CHARGING
            s.fall_edge = None
            s.last_high = t
            self.plateau.clear()
            self.held.clear()
            if s.suspended:
                out.append(self._transition(TransactionState.UPDATED, t, None))
            s.suspended = False
            return out
        if s.tail_w:
            if cfg.tail_fraction * s.level_w <= excess <= s.tail_w + 0.01 * s.level_w:
                # Still winding down below the stop threshold: the end of a battery's taper.
                s.tail_w = s.last_ev_w = excess
                s.low_since = t
                s.resume_since = None
                return out
            if excess < cfg.tail_fraction * s.level_w:  # the charger's last step off
                s.low_since = self._stop_between(t, p, excess, s.tail_w)
            s.tail_w = 0.0
        s.resume_since = None
        s.last_ev_w = 0.0
        if t - s.low_since >= cfg.pause_max_s:
            out.append(self._end(t, s.low_since))
        elif not s.suspended and t - s.low_since >= cfg.suspend_after_s:
            s.suspended = True
            out.append(self._transition(TransactionState.SUSPENDED_EV, t, None))
        return out

    def _ramped_down(self, s: _Session, excess: float) -> float:
        """How far the session's excess fell into this reading over the readings it went on
        falling, within ``ramp_down_s``: a charger at its charge limit ramps its current down
        over a few minutes, a fall that readings a minute apart split into several parts,
        none of them EV-sized. Not under a limit or the sun (``recent`` is not kept there)."""
        n = round(self.config.ramp_down_s / max(self.interval_s, 1.0))
        if n < 2 or s.unlimited_level_w is not None or s.solar:
            return 0.0  # within two readings: the fall over two readings is the whole of it
        slack = 0.02 * s.level_w  # a reading's noise does not end the ramp
        top = later = excess
        for earlier in reversed(s.recent[-n:]):
            if earlier < later - slack:
                break
            top, later = max(top, earlier), earlier
        return top - excess

    def _taper_memory(self) -> int:
        """Readings a session keeps to find a taper in: its window, the flat after it and the
        charge before it."""
        cfg = self.config
        span = cfg.taper_min_s + cfg.taper_window_s + cfg.taper_flat_s
        return round(span / max(self.interval_s, 1.0)) + 10

    def _follow_trend(self, t: float, s: _Session, excess: float) -> tuple[int, int] | None:
        """Keeps the session's recent excess and its trend; (top, bottom) of the taper once the
        EV's charge has tapered off while another load runs on (the excess still looks like
        charging)."""
        cfg = self.config
        if s.unlimited_level_w is not None or s.solar:
            return None  # a limit lowers the draw on purpose; the sun drifts net power
        level = s.own_w or s.level_w
        extend_trend(s.recent, s.trend, excess, cfg.taper_step * level)
        s.recent.append(excess)
        dt = max(self.interval_s, 1.0)
        keep = self._taper_memory()
        if len(s.recent) > keep + keep // 4:  # trimmed in quarters: amortised O(1) a reading
            del s.recent[:-keep]
            del s.trend[: len(s.trend) - (keep - 1)]
        if self.last_t is None or int(t // 60) == int(self.last_t // 60):
            return None  # judged once a minute
        if t - s.start < cfg.tapered_confirm_s:
            return None
        return wound_down(s.trend, level, dt, cfg)

    def _end_tapered(self, t: float, s: _Session, top: int, bottom: int) -> Transition:
        """End the session where its charge tapered off; what ran on is another load's, and
        through the taper the EV drew its level less what it had wound down by."""
        dt = self.interval_s
        level = s.own_w or s.level_w
        counted = 0.0
        for k in range(top, len(s.recent) - 1):  # the last reading's energy is not in yet
            own = tapering_power(s.trend, level, top, k) if k <= bottom else 0.0
            counted += min(s.recent[k], level) - min(s.recent[k], own)
        s.ev_wh = max(0.0, s.ev_wh - counted * dt / 3600.0)
        stop = round(t - (len(s.recent) - 1 - bottom) * dt)
        return self._end(t, stop)

    def _follow_dips(self, s: _Session, excess: float) -> None:
        """A steady lower level inside the session, then a rise back: the lower level is the
        EV alone, and the level it was confirmed at had another load on top (an AC running
        through most of the confirmation). From then on the EV's power is capped at its own
        level; the confirmed level still decides when it stops. Not under a power limit,
        which lowers the EV's draw on purpose."""
        if s.unlimited_level_w is not None:
            return
        steady = abs(excess - (self.last_p - s.base_w)) <= 0.05 * excess
        if steady and self.config.min_ev_power_w <= excess <= 0.8 * s.level_w:
            s.dip_w = excess
        elif s.dip_w and excess >= 0.9 * s.level_w:
            # The peak already published stays: a session's peak never falls between messages.
            s.own_w = s.dip_w
            s.dip_w = 0.0

    def _restart_candidate(self, t: float, p: float, s: _Session) -> list[Transition]:
        """The "resumed" load is a cycling appliance's next cycle: end the session at its stop
        and follow the new load as a fresh candidate from its rising edge."""
        assert s.low_since is not None
        assert s.resume_since is not None
        began, base = s.resume_since, s.base_w
        ended = self._end(t, s.low_since)
        self._begin_candidate(began, base, p - base)
        return [ended]

    def _stop_between(self, t: float, p: float, excess: float, level: float) -> float:
        """When the load of ``level`` stopped, the reading at ``t`` (power ``p``, ``excess``
        over the base) the first to fall under it. A reading is its interval's mean, labelled
        at the interval's start: the share of the level left in this one is how far into its
        interval the load ran on; with none left, the share the one before held of it (a load
        stopping late in an interval leaves most of it there)."""
        now = min(1.0, excess / level)
        if now >= 0.2:
            return round(t + self.interval_s * now)
        before = (self.last_p - (p - excess)) / level
        if 0.2 <= before < 0.9 and self.last_t is not None:
            return round(self.last_t + self.interval_s * before)
        return t

    def _end(self, t: float, stop: float) -> Transition:
        s = self.session
        assert s is not None
        stop = max(stop, s.start)
        # A stop inside the interval of the reading at ``t`` is after ``t`` (its label).
        tr = self._transition(TransactionState.ENDED, max(t, stop), stop)
        if self.learns_house_power:
            self.house.learn_charging_power(tr.ev_peak_power_w)
        self.session = None
        self.phase = Phase.IDLE
        self.floor.clear()
        self.history_start = t
        self.floor.push(t, self.last_p)
        return tr

    def _gap(self, t: float, p: float, energy_wh: float | None, dt: float) -> list[Transition]:
        out: list[Transition] = []
        s = self.session
        if s is not None and self.phase is Phase.CHARGING and p - s.base_w >= 0.6 * s.level_w:
            # Charging on both sides of the gap: bridge it, EV energy at the plateau level
            # bounded by what the register says the house used.
            meter = self._meter_delta(dt, energy_wh)
            ev = min(s.level_w * dt / 3600.0, meter)
            s.meter_wh += meter
            s.ev_wh += ev
            s.house_wh += ev + max(0.0, meter - ev)
            self.last_t, self.last_p, self.last_e = t, p, energy_wh
            return out
        if s is not None:
            stop = s.low_since if self.phase is Phase.PAUSED and s.low_since else s.last_high
            out.append(self._end(self.last_t or t, stop + (0 if s.low_since else self.interval_s)))
        self.phase = Phase.IDLE
        self._start_history(t, p, energy_wh)
        return out

    def finish(self) -> list[Transition]:
        """End an open session at the last reading (end of an offline file)."""
        out = [tr for r in self.means.flush() for tr in self._reading(*r)]
        s = self.session
        if s is None or self.last_t is None:
            self.phase = Phase.IDLE
            return out
        stop = s.low_since if self.phase is Phase.PAUSED and s.low_since else self.last_t
        return [*out, self._end(self.last_t, stop)]

    def deciding_since(self) -> float | None:
        """The start of the session open or of the candidate still being judged (a span a
        transition of this detector may yet cover), or None when it is idle."""
        if self.session is not None and self.phase in (Phase.CHARGING, Phase.PAUSED):
            return self.session.start
        if self.phase in (Phase.PENDING, Phase.POSTCHECK):
            return self.cand_start
        return None

    # ------------------------------------------------------------------ power limits
    def open_session(self) -> str | None:
        """The transactionId of the session charging or paused now, if any."""
        if self.session is None or self.phase not in (Phase.CHARGING, Phase.PAUSED):
            return None
        return self.session.transaction_id

    @property
    def ev_power_w(self) -> float:
        """The EV's power at the last reading (0 outside a session)."""
        return self.session.last_ev_w if self.open_session() and self.session else 0.0

    def expect_limit(self, transaction_id: str, limit_w: float | None) -> bool:
        """A charger accepted a limit (None: cleared) for this session: the EV's expected level
        becomes the lower of its own and the limit, so the drop reads as a limited charge, not
        as the end of the session. False when that session is not open."""
        s = self.session
        if s is None or self.open_session() != transaction_id:
            return False
        if s.unlimited_level_w is None:
            s.unlimited_level_w = s.level_w
        s.level_w = s.unlimited_level_w if limit_w is None else min(s.unlimited_level_w, limit_w)
        return True

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> dict[str, Any]:
        """Plain-JSON state, enough to resume after a restart without a second Started. A
        running agent's: what only ``follows_loads_under`` keeps (the 4-h floor, the load under
        a candidate) is never set there, and the offline mode does not resume."""
        return {
            "asset_id": self.asset_id,
            "phase": self.phase.value,
            "last_t": self.last_t,
            "last_p": self.last_p,
            "prev_p": self.prev_p,
            "last_e": self.last_e,
            "interval_s": self.interval_s,
            "history_start": self.history_start,
            "dropped_readings": self.dropped_readings,
            "floor": list(self.floor.items),
            "plateau": list(self.plateau.items),
            "lately": list(self.lately.items),
            "held": list(self.held.items),
            "cand_start": self.cand_start,
            "cand_first_excess": self.cand_first_excess,
            "cand_base": self.cand_base,
            "cand_excess": self.cand_excess,
            "cand_trend": self.cand_trend,
            "cand_meter_wh": self.cand_meter_wh,
            "cand_house_wh": self.cand_house_wh,
            "cand_sum": self.cand_sum,
            "cand_stacked": self.cand_stacked,
            "on_top": self.on_top,
            "cand_rise": self.cand_rise,
            "rise_samples": self.rise_samples,
            "earlier_rise": self.earlier_rise,
            "earlier_samples": self.earlier_samples,
            "post_stop": self.post_stop,
            "post_level": self.post_level,
            "post_from": self.post_from,
            "post_fall": self.post_fall,
            "post_top": self.post_top,
            "post_low": self.post_low,
            "post_ramped": self.post_ramped,
            "session": None if self.session is None else vars(self.session).copy(),
            "means": self.means.snapshot(),
            **self.house.snapshot(),
        }

    @classmethod
    def restore(cls, state: dict[str, Any], config: DetectorConfig | None = None) -> MeterDetector:
        det = cls(state["asset_id"], config or DetectorConfig())
        det.phase = Phase(state["phase"])
        for name in (
            "last_t", "last_p", "last_e", "interval_s", "history_start", "dropped_readings",
            "cand_start", "cand_first_excess", "cand_base", "cand_meter_wh", "cand_house_wh",
            "post_stop", "post_level", "post_from", "post_fall", "post_top", "post_low",
            "post_ramped", "cand_sum", "prev_p", "cand_stacked", "on_top", "cand_rise",
            "rise_samples", "earlier_rise", "earlier_samples",
        ):  # fmt: skip
            # A snapshot written before a field existed keeps that field's fresh default.
            setattr(det, name, state.get(name, getattr(det, name)))
        det.cand_excess = list(state["cand_excess"])
        det.cand_sorted = sorted(det.cand_excess[1:])
        if "cand_trend" in state:
            det.cand_trend = list(state["cand_trend"])
        else:  # a snapshot from before the trend was kept: rebuilt at today's level
            for i in range(1, len(det.cand_excess)):
                extend_trend(
                    det.cand_excess[:i], det.cand_trend, det.cand_excess[i], det._trend_step()
                )
        det.house.restore(state)
        det.floor = _RollingMin(det.config.floor_window_s, state["floor"])
        det.plateau = _RollingMin(det.config.plateau_window_s, state["plateau"])
        det.lately = _RollingMin(det.config.step_window_s, state.get("lately"))
        det.held = _RollingMin(det.config.held_window_s, state.get("held"))
        det.session = None if state["session"] is None else _Session(**state["session"])
        if "means" in state:
            det.means.restore(state["means"])
        else:  # a snapshot from before readings were averaged: its last reading was judged
            det.means.last_t = det.last_t
        return det
