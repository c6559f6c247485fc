"""Offline detection over a historical file (``python -m edge_agent detect``).

Reads CSV ``timestamp,power_w,energy_wh`` or Pleevi measurement JSON Lines. Behind a net
meter with rooftop PV it first adds back the panels' output estimated over the file
(``rooftop_solar``), so the house's own load is judged as a house without panels. It runs the same
detector the live agent runs over each meter's readings in time order (primed with the cycling
loads of the file's first days, as a running agent would know them), and yields one
Itron-named record per session, leaving out those at under half the house's typical charging
power and those of a load on a daily schedule (seen over the whole file, they are other loads:
a well pump, a pool pump on its timer). Knowing that power from a first run,
and the hours at which the AC ran through the heat, it runs a second time with them (an AC a
fifth smaller than the EV is then not the EV's size; a hot afternoon's first long AC run,
with no cycle just before it, is then known for one). Last, a charge the detector lost under
other loads (it follows one candidate and one load on top) is looked for as a held layer at
that power over the whole file, and a session found late begun where its layer rose
(``held_layers``).
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import numpy as np
import orjson

from edge_agent.detector import (
    DETECTOR_VERSION,
    DetectorConfig,
    MeterDetector,
    Transition,
    transaction_id,
)
from edge_agent.held_layers import (
    READINGS_APART_S,
    Cycler,
    energy_over,
    held_layers,
    layer_begun_before,
    lost_charges,
    rises_of_size,
    rose_at,
)
from edge_agent.house import House, charging_power, commonest_power
from edge_agent.rooftop_solar import panel_output
from edge_agent.time_of_day import DAY_S, apart_in_the_day
from schemas.pleevi import Measurement, TransactionState
from schemas.timefmt import format_utc

log = logging.getLogger(__name__)

# A charge found only over the whole file, under other loads, is less sure than one followed.
LOST_CONFIDENCE = 0.4

# A whole-house meter draws more than this at some time of any day: a file that never does
# holds kW (or kWh per interval), not the W its header names, and would silently give nothing.
PLAUSIBLE_HOUSE_W = 50.0


class InputError(ValueError):
    """A reading file line that cannot be used; carries the line number."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


Reading = tuple[str, float, float, float | None]
"""(asset id, epoch seconds, power W, register Wh or None)."""


def parse_timestamp(text: str, line: int, assume_tz: tzinfo | None) -> float:
    try:
        stamp = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(line, f"timestamp {text!r} is not ISO 8601") from None
    if stamp.tzinfo is None:
        if assume_tz is None:
            raise InputError(
                line, f"timestamp {text!r} has no UTC offset (pass --timezone to assume one)"
            )
        stamp = stamp.replace(tzinfo=assume_tz)
    return stamp.timestamp()


def read_csv(stream: TextIO, asset_id: str, assume_tz: tzinfo | None = None) -> Iterator[Reading]:
    """Rows of a ``timestamp,power_w,energy_wh`` file. Columns are found by their names (in
    any order and case, other columns ignored): a power-only export without ``energy_wh`` is
    read too, its energy then taken from power x time."""
    reader = csv.reader(stream)
    header = [h.strip().lower() for h in next(reader, None) or []]
    if "timestamp" not in header or "power_w" not in header:
        raise InputError(1, "header must name timestamp,power_w (and energy_wh if there is one)")
    at, pw = header.index("timestamp"), header.index("power_w")
    en = header.index("energy_wh") if "energy_wh" in header else None
    for number, row in enumerate(reader, start=2):
        if len(row) <= at or not row[at].strip():
            continue
        t = parse_timestamp(row[at], number, assume_tz)
        power_text = row[pw].strip() if len(row) > pw else ""
        energy_text = row[en].strip() if en is not None and len(row) > en else ""
        try:
            power = float(power_text) if power_text else float("nan")
            energy = float(energy_text) if energy_text else None
        except ValueError:
            raise InputError(
                number, f"power/energy not numbers: {power_text!r}, {energy_text!r}"
            ) from None
        yield asset_id, t, power, energy


def read_jsonl(stream: TextIO) -> Iterator[Reading]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            m = Measurement.model_validate_json(line)
        except ValueError as exc:
            raise InputError(number, str(exc).splitlines()[0]) from None
        yield m.asset_id, m.timestamp.timestamp(), m.power_w, m.energy_wh


def read_file(path: Path, assume_tz: tzinfo | None = None) -> Iterator[Reading]:
    with path.open(encoding="utf-8-sig") as stream:  # a spreadsheet's export starts with a BOM
        first = stream.readline()
        stream.seek(0)
        if first.lstrip().startswith("{"):
            yield from read_jsonl(stream)
        else:
            yield from read_csv(stream, path.stem, assume_tz)


def session_record(ended: Transition, version: str = DETECTOR_VERSION) -> dict[str, Any]:
    """An ``Ended`` transition as an Itron-named session record (``version``: the
    detector's, with its tuned thresholds, ``DetectorConfig.version``)."""
    assert ended.stop_time is not None
    return {
        "MeterId": ended.asset_id,
        "ChargeStartTime": format_utc(datetime.fromtimestamp(ended.start_time, UTC)),
        "ChargeEndTime": format_utc(datetime.fromtimestamp(ended.stop_time, UTC)),
        "ChargeW": ended.ev_peak_power_w,
        "ChargeDuration": round(ended.duration_h, 4),
        "ChargeEnergy": ended.ev_energy_wh,
        "transactionId": ended.transaction_id,
        "confidence": ended.confidence,
        "detectorVersion": version,
    }


def detect(
    readings: Iterable[Reading],
    config: DetectorConfig | None = None,
    *,
    charging_power_w: float | None = None,
) -> Iterator[Transition]:
    """All ``Ended`` transitions in ``readings``, meter by meter (open sessions end at EOF).

    Each meter's readings are taken in time order. A running agent remembers the appliances
    that cycled in the days before; a file starts without that memory, so its first days would
    be judged on less evidence than the rest. Each meter's detector is primed with the cycles
    seen in the file's first ``cycle_lookback_s`` (a first pass over those readings), then
    runs over the whole file; its sessions are then judged together (see
    ``_of_the_households_ev``). With enough of them the house's own charging power is known,
    and a second run uses it (``House.charging_w``), and the hours of the day at
    which the first run saw the AC run through the heat (``House.heat_hours``). A known
    ``charging_power_w`` (the power the meters' EVs draw, measured on a past charge) is used
    instead of the learnt one, however few sessions the file holds. Knowing the power, the
    sessions found late are begun where their charges rose and the charges lost under other
    loads are added (``_over_the_whole_file``).

    The AC's heat hours count on the file's days after a reading as well as before it, so
    within ``offline_heat_lookback_s`` of it, not a running agent's ``heat_lookback_s``.
    """
    config = config or DetectorConfig()
    config = replace(config, heat_lookback_s=config.offline_heat_lookback_s)
    by_meter: dict[str, _MeterReadings] = {}
    for asset_id, t, power, energy in readings:
        meter = by_meter.get(asset_id)
        if meter is None:
            meter = by_meter[asset_id] = _MeterReadings(asset_id)
        meter.add(t, power, energy)
    for meter in by_meter.values():
        meter.add_back_the_panels(config)
        days = meter.days()
        if days >= 1 and max(map(abs, meter.powers)) < PLAUSIBLE_HOUSE_W:
            log.warning(
                "%s: power never reaches %.0f W in %d readings over %.0f days: power_w must be "
                "in watts (are these kW?); no sessions can be found",
                meter.asset_id, PLAUSIBLE_HOUSE_W, len(meter.powers), days,
            )  # fmt: skip
        cycles = _cycles_early_in(meter, config)
        first = _sessions(meter, config, cycles)
        heat = first.heat_hours
        kept = _of_the_households_ev(first.ended, config, days)
        ev_power = charging_power_w
        timer: float | None = None
        if len(kept) >= config.household_min_sessions:
            if ev_power is None:
                # Readings over 5 min apart blur an AC's runs through the heat into its cycles:
                # no heat hours are learnt there, and none known is not none there.
                house = House(config, heat_hours=heat)
                ev_power = charging_power(
                    [tr.ev_peak_power_w for tr in kept],
                    config.large_load_w,
                    days=[int(tr.start_time // DAY_S) for tr in kept],
                    in_the_heat=[house.in_the_heat_hours(tr.start_time) for tr in kept]
                    if meter.interval() <= READINGS_APART_S[1]
                    else None,
                )
            timer = _charging_timer(kept, config)
        if ev_power is not None or any(heat):
            # Second pass, knowing from the first (the whole file) the house's own charging
            # power and the hours its AC runs through the heat.
            second = _sessions(
                meter, config, cycles, ev_power_w=ev_power, timer_s=timer, heat_hours=heat
            )
            kept = _of_the_households_ev(second.ended, config, days)
            heat, cycles = second.heat_hours, cycles + second.cycles
        if ev_power is not None:
            cycler = _the_houses_cycler(cycles, ev_power, config)
            kept = _over_the_whole_file(meter, kept, ev_power, heat, config, cycler=cycler)
        yield from kept


class _MeterReadings:
    """One meter's readings, held as three arrays of doubles (24 bytes a reading, not ~150 as
    tuples): a whole file is read before detection starts."""

    def __init__(self, asset_id: str) -> None:
        self.asset_id = asset_id
        self.times, self.powers, self.energies = array("d"), array("d"), array("d")
        self.order: Sequence[int] | None = None

    def days(self) -> float:
        """How many days the readings span."""
        return (max(self.times) - min(self.times)) / DAY_S if self.times else 0.0

    def interval(self) -> float:
        """The readings' median interval (s), in time order."""
        times = np.sort(np.frombuffer(self.times, dtype=np.float64))
        return float(np.median(np.diff(times))) if len(times) > 1 else 0.0

    def add_back_the_panels(self, config: DetectorConfig) -> None:
        """Behind a net meter with rooftop PV, the house's own load: the panels' estimated
        output (``rooftop_solar``) added back. While they give, the register (what the house
        drew from the grid) is left out: the EV's energy is its power over time there."""
        times = np.frombuffer(self.times, dtype=np.float64)
        powers = np.frombuffer(self.powers, dtype=np.float64)
        output = panel_output(
            times,
            powers,
            export_w=config.solar_export_w,
            min_peak_w=config.min_ev_power_w / 2,
        )
        if output is None:
            return
        log.info(
            "%s: rooftop PV behind the meter; its estimated output (peak %.0f W) is added back",
            self.asset_id,
            float(output.max()),
        )
        energies = np.frombuffer(self.energies, dtype=np.float64)
        self.powers = array("d", (powers + output).tobytes())
        self.energies = array("d", np.where(output > 0, np.nan, energies).tobytes())

    def add(self, t: float, power: float, energy: float | None) -> None:
        self.times.append(t)
        self.powers.append(power)
        self.energies.append(math.nan if energy is None else energy)

    def in_time_order(self) -> Iterator[tuple[float, float, float | None]]:
        """(time, power, register) in time order: a historical file has no arrival order to
        respect, so files concatenated out of order are read in time order (a repeated
        timestamp keeps its first row)."""
        times, powers, energies = self.times, self.powers, self.energies
        if self.order is None:  # worked out once (all readings are in by now), read thrice
            ordered = all(times[i] <= times[i + 1] for i in range(len(times) - 1))
            n = len(times)
            self.order = range(n) if ordered else sorted(range(n), key=times.__getitem__)
        for i in self.order:
            e = energies[i]
            yield times[i], powers[i], None if math.isnan(e) else e


class _Pass(NamedTuple):
    """What a pass over the whole file found: its ``Ended`` transitions, and the AC's heat
    hours and the cycles the detector knew at the end (``House.heat_hours``, ``cycles``)."""

    ended: list[Transition]
    heat_hours: list[list[float]]
    cycles: list[list[float]]


def _sessions(
    meter: _MeterReadings,
    config: DetectorConfig,
    cycles: list[list[float]],
    *,
    ev_power_w: float | None = None,
    timer_s: float | None = None,
    heat_hours: list[list[float]] | None = None,
) -> _Pass:
    """One pass of a primed detector over one meter's readings."""
    det = MeterDetector(
        meter.asset_id,
        config,
        learns_house_power=False,
        follows_loads_under=True,
        adds_back_panels=False,  # added back over the whole file (``add_back_the_panels``)
    )
    det.house.cycles = [list(c) for c in cycles]
    det.house.charging_w, det.house.timer_s = ev_power_w, timer_s
    if heat_hours is not None:
        det.house.heat_hours = [list(ends) for ends in heat_hours]
    ended = [
        tr
        for t, power, energy in meter.in_time_order()
        for tr in det.update(t, power, energy)
        if tr.state is TransactionState.ENDED
    ]
    return _Pass(ended + det.finish(), det.house.heat_hours, det.house.cycles)


def _of_the_households_ev(
    ended: list[Transition], config: DetectorConfig, days: float
) -> list[Transition]:
    """A house's charges share one power (one car, one charger). Seen over a whole file, a
    "session" at under half the house's typical session power is another load (a well pump, the
    base load climbing for hours), not its EV; nor is a load on a daily schedule."""
    ended = _off_the_daily_schedule(ended, config, days)
    if len(ended) < config.household_min_sessions:
        return ended
    typical = statistics.median(tr.ev_peak_power_w for tr in ended)
    return [tr for tr in ended if tr.ev_peak_power_w >= config.household_level_fraction * typical]


def _over_the_whole_file(
    meter: _MeterReadings,
    found: list[Transition],
    ev_power: float,
    heat_hours: list[list[float]],
    config: DetectorConfig,
    *,
    cycler: Cycler | None,
) -> list[Transition]:
    """The sessions found, each begun where its charge's layer rose if it was found late, and
    the charges the detector lost under other loads (``held_layers``; with the house's
    ``cycler``, those it ran on top of too), in time order."""
    order = np.fromiter(meter.order or range(len(meter.times)), dtype=np.int64)
    order = order[~np.isnan(np.frombuffer(meter.powers, dtype=np.float64)[order])]  # gaps
    times = np.frombuffer(meter.times, dtype=np.float64)[order]
    powers = np.frombuffer(meter.powers, dtype=np.float64)[order]
    registers = np.frombuffer(meter.energies, dtype=np.float64)[order]
    rises = rises_of_size(powers, ev_power, config.same_size_tolerance)
    layers = held_layers(
        times,
        powers,
        ev_power,
        rises,
        floor_s=config.floor_window_s,
        max_gap_s=config.max_gap_s,
        max_s=config.max_session_s,
        export_w=config.solar_export_w,
        cycler=cycler,
    )

    def begun_at_its_layer(tr: Transition) -> Transition:
        """Begun where its charge's layer rose if it was found late (``layer_begun_before``)
        and not at a rise of the EV's power (within ``step_window_s``: there the detector saw
        the charge rise, and the layer's earlier rise is the AC's run it rose in), the EV's
        energy and the meter's count before it added."""
        start, stop = tr.start_time, tr.stop_time or tr.timestamp
        layer = layer_begun_before(layers, start, stop)
        if layer is None or rose_at(times, rises, start, config.step_window_s):
            return tr
        before = energy_over(times, powers, layer.floor_w, ev_power, start=layer.start, stop=start)
        counted = _counted_between(times, powers, registers, layer.start, start)
        return replace(
            tr,
            start_time=layer.start,
            ev_energy_wh=round(tr.ev_energy_wh + before, 1),
            meter_energy_wh=round(tr.meter_energy_wh + counted, 1),
        )

    found = [begun_at_its_layer(tr) for tr in found]
    lost = lost_charges(
        layers,
        [(tr.start_time, tr.stop_time or tr.timestamp) for tr in found],
        min_s=config.lost_min_s,
        apart_s=config.lost_apart_s,
        outlast_factor=config.outlast_factor,
        outlast_margin_s=config.outlast_margin_s,
        in_the_heat_hours=House(config, heat_hours=heat_hours).in_the_heat_hours,
        cycled_on_min=config.stack_min_count,
    )
    lost_sessions = [
        Transition(
            state=TransactionState.ENDED,
            asset_id=meter.asset_id,
            transaction_id=transaction_id(meter.asset_id, layer.start),
            timestamp=layer.stop,
            start_time=layer.start,
            stop_time=layer.stop,
            ev_power_w=0.0,
            ev_peak_power_w=round(ev_power, 1),
            ev_energy_wh=round(layer.ev_energy_wh, 1),
            meter_energy_wh=round(
                _counted_between(times, powers, registers, layer.start, layer.stop), 1
            ),
            confidence=LOST_CONFIDENCE,
            sequence_number=0,
        )
        for layer in lost
    ]
    return sorted(found + lost_sessions, key=lambda tr: tr.start_time)


def _the_houses_cycler(
    cycles: list[list[float]], ev_power: float, config: DetectorConfig
) -> Cycler | None:
    """The load the house cycled most in ``cycles`` (its first and last days' cycles), if it
    ran ``cycler_min_runs`` times, and its charges are a Level 2 charger's
    (``cycled_on_min_w``) of another size: where its AC is the EV's size, or the EV is a Level
    1's (the size of a pool pump or a dehumidifier, which run for hours under the AC's
    cycles), a run on top does not tell which load the layer is."""
    levels = [c[1] for c in cycles]
    if len(levels) < config.cycler_min_runs or ev_power < config.cycled_on_min_w:
        return None
    size = commonest_power(levels)
    tolerance = config.same_size_tolerance
    runs = sum(abs(level - size) <= tolerance * size for level in levels)
    if runs < config.cycler_min_runs or abs(ev_power - size) <= tolerance * ev_power:
        return None
    return Cycler(size, tolerance, config.stack_min_s)


def _counted_between(
    times: np.ndarray, powers: np.ndarray, registers: np.ndarray, start: float, stop: float
) -> float:
    """What the meter counted from ``start`` to ``stop``: its register's advance, or (no
    register, or one that went back: a reset) the house's imported power over that time."""
    first, last = np.searchsorted(times, [start, stop])
    advance = float(registers[last] - registers[first])
    if advance >= 0.0:  # NaN (no register) compares false
        return advance
    return energy_over(times, powers, 0.0, math.inf, start=start, stop=stop)


def _off_the_daily_schedule(
    ended: list[Transition], config: DetectorConfig, days: float
) -> list[Transition]:
    """Leaves out a load on a daily schedule (a pool pump on its timer): under an L2 charger's
    power (``schedule_max_w``), on most days of the file it started at the same time of day
    (``schedule_slack_s``) and ran about as long (their median spread within
    ``schedule_tolerance``). An EV on a charging timer starts at one time too, but charges for
    as long as the day's driving needs; a commuter's nightly L2 charge, as regular, is not
    questioned."""
    small = sorted(
        (tr for tr in ended if tr.ev_peak_power_w < config.schedule_max_w),
        key=lambda tr: tr.start_time % DAY_S,
    )
    # By time of day, once more round the clock either side (a group may span midnight): each
    # session's group is a slice found by bisection, judged in numpy (a pool pump over years is
    # thousands of sessions in groups of thousands).
    times = np.array([tr.start_time % DAY_S for tr in small])
    around = np.concatenate([times - DAY_S, times, times + DAY_S])
    days_on = np.array([tr.start_time // DAY_S for tr in small])
    hours = np.array([tr.duration_h for tr in small])
    slack, n = config.schedule_slack_s, len(small)
    need = max(config.household_min_sessions, config.schedule_min_share * days)
    scheduled: set[int] = set()
    for lo, hi in zip(
        np.searchsorted(around, times - slack, "left"),
        np.searchsorted(around, times + slack, "right"),
        strict=True,
    ):
        members = np.unique(np.arange(lo, hi) % n)  # a session once, however wide the slack
        if len(np.unique(days_on[members])) < need:
            continue
        median = np.median(hours[members])
        spread = np.median(np.abs(hours[members] - median))
        if spread <= config.schedule_tolerance * median:
            scheduled.update(id(small[k]) for k in members)
    return [tr for tr in ended if id(tr) not in scheduled]


def _charging_timer(sessions: list[Transition], config: DetectorConfig) -> float | None:
    """The time of day (s) at which several of a house's sessions started to the minute: a
    charging timer (set to an off-peak rate's start), or None."""
    starts = sorted(tr.start_time % DAY_S for tr in sessions)
    best, best_count = None, 0
    for s in starts:
        near = [x for x in starts if apart_in_the_day(x, s) <= 60.0]
        if len(near) > best_count:
            best, best_count = s, len(near)
    return best if best_count >= config.timer_min_sessions else None


def _cycles_early_in(meter: _MeterReadings, config: DetectorConfig) -> list[list[float]]:
    """Cycling loads seen in the first ``cycle_lookback_s`` of a meter's readings, dated at
    its first reading (so that they age out as a running agent's memory would)."""
    primer = MeterDetector(meter.asset_id, config, learns_house_power=False, adds_back_panels=False)
    first: float | None = None
    for t, power, energy in meter.in_time_order():
        first = t if first is None else first
        if t - first > config.cycle_lookback_s:
            break
        primer.update(t, power, energy)
    return [[first, *cycle[1:]] for cycle in primer.house.cycles] if first is not None else []


def dumps(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)
