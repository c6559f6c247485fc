"""Household load simulator with EV charging and labelled ground truth.

Builds a meter's whole-house power (W) and cumulative energy register (Wh) at any resolution,
together with the EV sessions hidden in it. The base load is either synthetic (standby,
refrigerator cycles, lighting and cooking noise) or real: one French household's 1-minute data
(Hebrail & Berard, UCI ML Repository, CC BY 4.0), which already carries real confounders.
On top come the confounders that fool simple detectors: air-conditioning compressor cycles
(2.5-4 kW, continuous on hot afternoons), electric water heaters (~4.5 kW), dryers, ovens,
ranges and well pumps; optionally pool pumps on daily timers, rooftop solar behind the
meter (net power, clouds), a second AC for an upper floor, and variable-speed heat pumps that
modulate for hours instead of cycling. EVs charge at Level 1 (1.4-1.9 kW) or Level 2
(3.3-11.5 kW) with soft start, taper near full, pauses and timer starts; session start hours
and energies are drawn from real residential sessions (Sorensen et al. 2021, CC BY 4.0) when
that file is given.
"""

from __future__ import annotations

import contextlib
import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
DAY_S = 86_400


@dataclass(frozen=True)
class GroundTruthSession:
    """One simulated charging session: start/end of the charge (pauses included)."""

    start: float
    end: float
    energy_wh: float
    peak_w: float
    level_w: float


@dataclass
class Trace:
    """A meter's readings (epoch seconds, W, Wh) and the EV sessions inside them."""

    asset_id: str
    times: FloatArray
    power_w: FloatArray
    energy_wh: FloatArray
    sessions: list[GroundTruthSession] = field(default_factory=list)
    ev_power_w: FloatArray | None = None

    def resample(self, resolution_s: int) -> Trace:
        """Mean power per interval (labelled at its start), register read at interval start."""
        step = round(resolution_s / float(self.times[1] - self.times[0]))
        if step <= 1:
            return self
        n = len(self.times) // step
        power = self.power_w[: n * step].reshape(n, step).mean(axis=1)
        ev = None
        if self.ev_power_w is not None:
            ev = self.ev_power_w[: n * step].reshape(n, step).mean(axis=1)
        return Trace(
            self.asset_id,
            self.times[: n * step : step].copy(),
            power,
            self.energy_wh[: n * step : step].copy(),
            list(self.sessions),
            ev,
        )

    def since(self, t: float) -> Trace:
        """The readings from ``t`` on and the sessions that began then or later (a meter as an
        agent meeting it at ``t`` sees it)."""
        k = int(np.searchsorted(self.times, t))
        return Trace(
            self.asset_id,
            self.times[k:].copy(),
            self.power_w[k:].copy(),
            self.energy_wh[k:].copy(),
            [s for s in self.sessions if s.start >= t],
            None if self.ev_power_w is None else self.ev_power_w[k:].copy(),
        )

    def readings(self) -> Iterator[tuple[str, float, float, float]]:
        """(asset, epoch s, W, Wh) in time order, as a meter reports them (0.1 resolution)."""
        for t, p, e in zip(self.times.tolist(), self.power_w, self.energy_wh, strict=True):
            yield self.asset_id, t, round(float(p), 1), round(float(e), 1)

    def write_csv(self, path: Path) -> None:
        with path.open("w", encoding="utf-8", newline="") as out:
            out.write("timestamp,power_w,energy_wh\n")
            for t, p, e in zip(self.times, self.power_w, self.energy_wh, strict=True):
                stamp = datetime.fromtimestamp(float(t), UTC).isoformat().replace("+00:00", "Z")
                out.write(f"{stamp},{p:.1f},{e:.1f}\n")


@dataclass(frozen=True)
class RealData:
    """Real inputs: a base-load series (W at 1 min) and EV session start hours and energies."""

    base_w: FloatArray | None = None
    session_hours: npt.NDArray[np.int64] | None = None
    session_kwh: FloatArray | None = None


def load_real_data(data_dir: Path) -> RealData:
    """Read ../shared/data's two files when present; missing files give synthetic defaults."""
    base = None
    uci = data_dir / "household_power_consumption_2007H1.zip"
    if uci.exists():
        with zipfile.ZipFile(uci) as archive:
            name = archive.namelist()[0]
            text = archive.read(name).decode("utf-8")
        values: list[float] = []
        last = 300.0
        for row in csv.reader(io.StringIO(text)):
            if not row or row[0] == "index":
                continue
            with contextlib.suppress(ValueError):  # "?" marks a missing minute: hold the last
                last = float(row[3]) * 1000.0
            values.append(last)
        base = np.asarray(values)
    hours = kwh = None
    norway = data_dir / "norway_residential_ev_sessions.csv"
    if norway.exists():
        with norway.open(encoding="utf-8") as sessions_file:
            rows = list(csv.DictReader(sessions_file, delimiter=";"))
        energies = np.asarray([float(r["El_kWh"].replace(",", ".")) for r in rows])
        starts = np.asarray([int(r["Start_plugin_hour"]) for r in rows])
        keep = energies >= 2.0  # below 2 kWh a "session" is a plug-in check, not a charge
        hours, kwh = starts[keep], energies[keep]
    return RealData(base, hours, kwh)


@dataclass(frozen=True)
class HouseholdSpec:
    days: int = 7
    step_s: int = 10
    hot_climate: bool = True
    ev_level_w: float | None = None
    sessions_per_day: float = 0.8
    start: datetime = datetime(2024, 7, 1, tzinfo=UTC)
    solar: bool = False  # rooftop PV: the meter sees net power and counts imported energy
    pool: bool = False  # a third of hot-climate houses get a pool pump on a daily timer
    hot_days: bool = False  # half the days, the AC runs without a break for 2-5 h of the afternoon
    abrupt_ends: bool = False  # charges stop in 1-5 min (at the car's charge limit), no long taper
    # Half the hot-climate houses cool their upper floor with a second AC of its own size.
    two_acs: bool = False
    # Half the hot-climate houses have a variable-speed heat pump (modulating, not cycling).
    variable_speed_ac: bool = False


def _on(power: FloatArray, a: int, b: int, watts: float | FloatArray) -> None:
    a, b = max(a, 0), min(b, len(power))
    if b <= a:
        return
    if isinstance(watts, np.ndarray):
        power[a:b] += watts[: b - a]
    else:
        power[a:b] += watts


def _cycling(  # noqa: PLR0917 - a private helper called with positional appliance data
    power: FloatArray,
    rng: np.random.Generator,
    start: int,
    length: int,
    watts: float,
    on_s: tuple[float, float],
    off_s: tuple[float, float],
    step: int,
    drift: float = 0.0,
) -> None:
    """On/off cycles; ``drift`` makes a compressor's draw climb as head pressure builds."""
    t = start
    while t < start + length:
        on = max(1, int(rng.uniform(*on_s) / step))
        profile = watts * rng.uniform(0.97, 1.03) * np.ones(on)
        if drift:
            seconds = np.arange(on) * step
            profile *= 1 + drift * (1 - np.exp(-seconds / 400.0)) + rng.normal(0, 0.012, on)
        _on(power, t, min(t + on, start + length), profile)
        t += on + int(rng.uniform(*off_s) / step)


def _synthetic_base(rng: np.random.Generator, n: int, step: int) -> FloatArray:
    per_day = DAY_S // step
    hours = (np.arange(n) % per_day) * step / 3600.0
    standby = rng.uniform(120, 350)
    evening = 250 * np.exp(-((hours - 20.0) ** 2) / 6.0) + 150 * np.exp(-((hours - 7.5) ** 2) / 2.0)
    power = standby + evening + rng.normal(0, 25, n)
    _cycling(power, rng, 0, n, rng.uniform(90, 160), (600, 1500), (900, 2400), step)  # fridge
    for _ in range(int(n * step / DAY_S * 6)):  # kettles, microwaves, hair dryers
        a = int(rng.integers(0, n))
        _on(power, a, a + int(rng.uniform(60, 600) / step), rng.uniform(800, 2000))
    floored: FloatArray = np.maximum(power, 50.0)
    return floored


def _real_base(rng: np.random.Generator, real: FloatArray, n: int, step: int) -> FloatArray:
    minutes = int(np.ceil(n * step / 60)) + 1
    # April-June only: January-March carry electric space heating, absent in the hot-climate
    # homes this detector is for (and trivially separable by season where it is present).
    spring = 90 * 1440
    offset = int(rng.integers(spring, max(spring + 1, len(real) - minutes)))
    per_minute = real[offset : offset + minutes]
    idx = (np.arange(n) * step // 60).astype(np.int64)
    return per_minute[idx] * rng.uniform(0.97, 1.03, n)


def _through_the_heat(  # noqa: PLR0917 - a private helper called with the day's AC data
    ac: FloatArray,
    heat: np.random.Generator,
    b: int,
    watts: float,
    drift: float,
    step: int,
) -> None:
    """A hot day's compressor (``ac``, from the afternoon's start), sized for the design day,
    running without a break for 2-5 h of the afternoon before ``b`` (joining the cycles it
    meets), its draw rising and falling by 2-8% with the afternoon's heat."""
    r0 = int(heat.uniform(0, 3 * 3600) / step)
    r1 = min(b, r0 + int(heat.uniform(2, 5) * 3600 / step), len(ac))
    while r0 > 0 and ac[r0 - 1] > 0:  # a cycle already running carries on
        r0 -= 1
    while r1 < len(ac) and ac[r1] > 0:
        r1 += 1
    if r1 <= r0:
        return
    seconds = np.arange(r1 - r0) * step
    heat_curve = 1 + heat.uniform(0.02, 0.08) * np.sin(np.pi * seconds / seconds[-1].clip(1))
    head = 1 + drift * (1 - np.exp(-seconds / 400.0))
    ac[r0:r1] = watts * head * heat_curve * (1 + heat.normal(0, 0.012, r1 - r0))


def _confounders(
    power: FloatArray,
    rng: np.random.Generator,
    spec: HouseholdSpec,
    step: int,
    *,
    heat: np.random.Generator | None,
    sizes: np.random.Generator,
    variable_speed: np.random.Generator | None = None,
) -> None:
    """The house's appliances; ``heat`` (own generator, so the house stays the same) gives
    half its hot days an afternoon the AC runs through. A house has one AC, one water heater,
    one oven and one dryer, each of one size (from ``sizes``, its own generator): a day's
    draw varies around it, the AC's by +-4% with the weather, the others' by +-2% with the
    supply voltage. With ``variable_speed`` (own generator) the AC is a variable-speed heat
    pump of the same size instead: the single-speed one's cycles are still drawn, so the rest
    of the house is the same, and replaced by the modulating draw."""
    per_day = DAY_S // step
    ac_size, heater_size = sizes.uniform(2500, 4000), sizes.uniform(4200, 4800)
    oven_size, dryer_size = sizes.uniform(2400, 3500), sizes.uniform(4000, 5200)

    def around(size: float, draw: float, low: float, high: float, spread: float) -> float:
        # The day's draw from [low, high] (taken as before, so the rest of the house's
        # random stream is unchanged) becomes a variation of +-spread around the house's size.
        return size * (1 + spread * (2 * (draw - low) / (high - low) - 1))

    def s(seconds: float) -> int:
        return int(seconds / step)

    for day in range(spec.days):
        d0 = day * per_day
        if spec.hot_climate:
            ac_w = around(ac_size, rng.uniform(2500, 4000), 2500, 4000, 0.04)
            # Afternoon: continuous or long cycles; night and morning: shorter cycles.
            a, b = d0 + s(rng.uniform(11, 14) * 3600), d0 + s(rng.uniform(19, 23) * 3600)
            drift = rng.uniform(0.04, 0.12)
            # The AC's own draw, over the span its cycles can reach (afternoon and night).
            ac = np.zeros(max(0, min(b + s(6 * 3600), len(power)) - a))
            _cycling(ac, rng, 0, b - a, ac_w, (900, 3600), (300, 900), step, drift)
            _cycling(ac, rng, b - a, s(6 * 3600), ac_w, (420, 1200), (600, 1800), step, drift)
            if heat is not None and heat.random() < 0.5:
                _through_the_heat(ac, heat, b - a, ac_w, drift, step)
            if variable_speed is not None:
                ac = _variable_speed_draw(variable_speed, len(ac), b - a, ac_w, step)
            power[a : a + len(ac)] += ac
            _on(power, a, b + s(6 * 3600), 350)  # indoor fan
        for _ in range(rng.poisson(1.5)):  # water heater after showers and dishes
            a = d0 + s(rng.choice([rng.uniform(6, 9), rng.uniform(18, 23)]) * 3600)
            heater_w = around(heater_size, rng.uniform(4200, 4800), 4200, 4800, 0.02)
            _on(power, a, a + s(rng.uniform(900, 2700)), heater_w)
        if rng.random() < 0.4:  # dryer: cycling heater plus motor
            a = d0 + s(rng.uniform(9, 21) * 3600)
            length = s(rng.uniform(2400, 4200))
            _on(power, a, a + length, 300)
            dryer_w = around(dryer_size, rng.uniform(4000, 5200), 4000, 5200, 0.02)
            _cycling(power, rng, a, length, dryer_w, (180, 480), (60, 180), step)
        if rng.random() < 0.5:  # oven: preheat then thermostat cycling
            a = d0 + s(rng.uniform(16.5, 19.5) * 3600)
            watts = around(oven_size, rng.uniform(2400, 3500), 2400, 3500, 0.02)
            _on(power, a, a + s(rng.uniform(600, 900)), watts)
            _cycling(
                power,
                rng,
                a + s(900),
                s(rng.uniform(1200, 4200)),
                watts,
                (60, 180),
                (120, 300),
                step,
            )
        for _ in range(rng.poisson(1.0)):  # range burners
            a = d0 + s(rng.uniform(7, 20) * 3600)
            _cycling(
                power,
                rng,
                a,
                s(rng.uniform(600, 1800)),
                rng.uniform(1200, 2500),
                (30, 120),
                (20, 90),
                step,
            )
        for _ in range(rng.poisson(2.0)):  # well pump
            a = d0 + s(rng.uniform(0, 24) * 3600)
            _on(power, a, a + s(rng.uniform(120, 600)), rng.uniform(900, 1500))


def _variable_speed_draw(
    rng: np.random.Generator, n: int, afternoon: int, rated_w: float, step: int
) -> FloatArray:
    """A variable-speed heat pump's draw over ``n`` steps from the early afternoon: its speed
    follows the cooling load (high through the ``afternoon`` steps, lower at night) with slow
    swings of minutes to an hour; it does not switch off between cycles but ramps, and under
    its lowest speed (30% of rated) it cycles there, in steps too small to be an EV's."""
    if n == 0:
        return np.zeros(0)
    peak = rng.uniform(0.6, 1.0)  # the day's heat: a hot afternoon runs near full speed
    demand = np.where(np.arange(n) < afternoon, peak, rng.uniform(0.2, 0.45))
    # Slow swings (an Ornstein-Uhlenbeck process, 20 min time constant): sun, clouds, doors.
    keep = np.exp(-step / 1200.0)
    shocks = rng.normal(0, 0.12 * np.sqrt(1 - keep**2), n)
    swing = np.zeros(n)
    for i in range(1, n):
        swing[i] = swing[i - 1] * keep + shocks[i]
    # The speed moves 10% of rated a minute at most: the control loop ramps.
    smooth = max(1, 1800 // step)
    target = np.clip(np.convolve(demand, np.ones(smooth) / smooth, "same") + swing, 0.0, 1.0)
    speed = np.zeros(n)
    limit = 0.1 * step / 60.0
    for i in range(1, n):
        speed[i] = speed[i - 1] + np.clip(target[i] - speed[i - 1], -limit, limit)
    low = 0.3
    draw = np.where(speed >= low, speed, 0.0)
    # Under its lowest speed: on/off at that speed (10-20 min each way).
    t = 0
    while t < n:
        on, off = int(rng.uniform(600, 1200) / step), int(rng.uniform(600, 1200) / step)
        quiet = speed[t : t + on + off] < low
        draw[t : t + on][quiet[:on]] = low
        t += max(1, on + off)
    out: FloatArray = draw * rated_w * (1 + rng.normal(0, 0.01, n))
    return out


def _second_ac(
    power: FloatArray, rng: np.random.Generator, days: int, step: int, *, hot_days: bool
) -> None:
    """An upper floor's own AC (half the hot-climate houses; ``rng`` is its own generator):
    1.8-3.2 kW, cycling through the afternoon and evening and a little at night, on its own
    thermostat; with ``hot_days`` half the afternoons it runs through for hours, as the first
    one does."""
    if rng.random() >= 0.5:
        return
    size = rng.uniform(1800, 3200)
    per_day = DAY_S // step
    for day in range(days):
        a = day * per_day + int(rng.uniform(12, 15) * 3600 / step)
        b = day * per_day + int(rng.uniform(20, 23) * 3600 / step)
        watts, drift = size * rng.uniform(0.96, 1.04), rng.uniform(0.04, 0.12)
        ac = np.zeros(max(0, min(b + int(4 * 3600 / step), len(power)) - a))
        if len(ac) == 0:
            continue
        _cycling(ac, rng, 0, b - a, watts, (600, 2400), (600, 1500), step, drift)
        _cycling(ac, rng, b - a, len(ac) - (b - a), watts, (300, 900), (1200, 2400), step, drift)
        if hot_days and rng.random() < 0.5:
            _through_the_heat(ac, rng, b - a, watts, drift, step)
        power[a : a + len(ac)] += ac


def _pool_pump(power: FloatArray, rng: np.random.Generator, days: int, step: int) -> None:
    """A hot-climate house's pool pump (a third of them): 1.1-2.2 kW, on a timer that starts it
    at the same minute every day (a few minutes of clock drift) and runs it 4-10 h."""
    if rng.random() >= 1 / 3:
        return
    watts = rng.uniform(1100, 2200)
    start_h, hours = rng.uniform(6, 12), rng.uniform(4, 10)
    for day in range(days):
        a = int((day * DAY_S + start_h * 3600 + rng.uniform(-180, 180)) / step)
        b = a + int(hours * 3600 / step)
        _on(power, a, b, watts * (1 + rng.normal(0, 0.01, max(0, min(b, len(power)) - a))))


def _solar(rng: np.random.Generator, n: int, step: int) -> FloatArray:
    """Rooftop PV output (W): a 3-7 kW system's summer day, with passing clouds of 2-20 min
    that cut it to 20-70% (the steps a net meter sees when the sun goes in)."""
    hours = (np.arange(n) * step % DAY_S) / 3600.0
    peak = rng.uniform(3000, 7000)
    sun = np.clip(np.sin((hours - 6.5) / 13.0 * np.pi), 0.0, None) ** 1.3 * peak
    cover = np.ones(n)
    for day in range(int(np.ceil(n * step / DAY_S))):
        for _ in range(int(rng.uniform(0, 20))):  # clear days to broken-cloud days
            a = int((day * DAY_S + rng.uniform(6, 20) * 3600) / step)
            cover[a : a + int(rng.uniform(120, 1200) / step)] = rng.uniform(0.2, 0.7)
    out: FloatArray = sun * cover
    return out


def _ev_profile(
    rng: np.random.Generator,
    level_w: float,
    energy_wh: float,
    step: int,
    ends: np.random.Generator | None = None,
) -> tuple[FloatArray, list[tuple[int, int]]]:
    """EV power at ``step`` resolution: soft start, plateau, taper, optional pauses. With
    ``ends`` (own generator, so the sessions stay the same) the charge stops in 1-5 min, as at
    a charge limit below full or at 3-4 kW into a large battery, instead of a 10-40 min taper;
    the car stays plugged in, drawing nothing, for the rest of the taper's time."""
    taper_share = rng.uniform(0.03, 0.10)
    plateau_s = energy_wh * (1 - taper_share) / level_w * 3600
    taper_s = rng.uniform(600, 2400)
    ramp = np.linspace(0.1, 1.0, max(1, int(rng.uniform(10, 60) / step)))
    plateau = np.ones(max(1, int(plateau_s / step)))
    floor = rng.uniform(0.15, 0.35)
    taper = np.linspace(1.0, floor, max(1, int(taper_s / step)))
    if ends is not None:
        short = min(len(taper), max(1, int(ends.uniform(60, 300) / step)))
        taper = np.concatenate([np.linspace(1.0, floor, short), np.zeros(len(taper) - short)])
    shape = np.concatenate([ramp, plateau, taper]) * level_w
    shape *= 1 + rng.normal(0, 0.01, len(shape))
    pauses: list[tuple[int, int]] = []
    if rng.random() < 0.2 and len(shape) > 4:
        at = int(rng.integers(len(shape) // 4, 3 * len(shape) // 4))
        gap = int(rng.uniform(180, 1500) / step)
        shape = np.concatenate([shape[:at], np.zeros(gap), shape[at:]])
        pauses.append((at, at + gap))
    return shape, pauses


def simulate_household(
    seed: int,
    spec: HouseholdSpec,
    real: RealData | None = None,
    asset_id: str | None = None,
) -> Trace:
    rng = np.random.default_rng(seed)
    step = spec.step_s
    n = spec.days * DAY_S // step
    real = real or RealData()
    heat = np.random.default_rng(seed + 3_000_017) if spec.hot_days else None
    ends = np.random.default_rng(seed + 4_000_037) if spec.abrupt_ends else None
    sizes = np.random.default_rng(seed + 5_000_011)
    variable_speed = None
    if spec.variable_speed_ac and spec.hot_climate:
        units = np.random.default_rng(seed + 7_000_003)
        variable_speed = units if units.random() < 0.5 else None
    if real.base_w is not None and rng.random() < 0.5:
        power = _real_base(rng, real.base_w, n, step)
        if spec.hot_climate:  # the real house has no AC; its own appliances are already in it
            _confounders(
                power, rng, spec, step, heat=heat, sizes=sizes, variable_speed=variable_speed
            )
    else:
        power = _synthetic_base(rng, n, step)
        _confounders(power, rng, spec, step, heat=heat, sizes=sizes, variable_speed=variable_speed)
    if spec.two_acs and spec.hot_climate:  # own generator, as for solar
        _second_ac(
            power, np.random.default_rng(seed + 6_000_007), spec.days, step, hot_days=spec.hot_days
        )

    if spec.pool and spec.hot_climate:  # own generator, as for solar: the house stays the same
        _pool_pump(power, np.random.default_rng(seed + 2_000_003), spec.days, step)

    level = spec.ev_level_w
    if level is None:
        kind = rng.random()
        if kind < 0.15:
            level = rng.uniform(1400, 1900)
        elif kind < 0.65:
            level = rng.uniform(3300, 4000)
        elif kind < 0.9:
            level = rng.uniform(6000, 7700)
        else:
            level = rng.uniform(10000, 11500)
    ev = np.zeros(n)
    sessions: list[GroundTruthSession] = []
    t0 = spec.start.timestamp()
    timer_hour = rng.choice([22.0, 23.0, 0.0, 1.0]) if rng.random() < 0.4 else None
    busy_until = 0
    for day in range(spec.days):
        if rng.random() > spec.sessions_per_day:
            continue
        if timer_hour is not None and rng.random() < 0.7:
            hour = timer_hour + (24 if timer_hour < 12 else 0)
        elif real.session_hours is not None:
            hour = float(real.session_hours[rng.integers(len(real.session_hours))]) + rng.random()
        else:
            hour = rng.normal(18.5, 2.5)
        energy_kwh = (
            float(real.session_kwh[rng.integers(len(real.session_kwh))])
            if real.session_kwh is not None
            else rng.uniform(4, 30)
        )
        energy_kwh = min(energy_kwh, level / 1000 * 14)
        start = int((day * DAY_S + hour * 3600) / step)
        if start <= busy_until + int(3600 / step):
            continue
        shape, _pauses = _ev_profile(rng, level, energy_kwh * 1000, step, ends)
        end = start + len(shape)
        if end >= n:
            continue
        ev[start:end] += shape
        busy_until = end
        charged_until = start + int(np.flatnonzero(shape)[-1]) + 1  # plugged in, idle after
        sessions.append(
            GroundTruthSession(
                start=t0 + start * step,
                end=t0 + charged_until * step,
                energy_wh=float(shape.sum() * step / 3600),
                peak_w=float(shape.max()),
                level_w=float(level),
            )
        )
    total = power + ev
    if spec.solar:  # own generator so that the same seed keeps the same house and sessions
        total = total - _solar(np.random.default_rng(seed + 1_000_003), n, step)
    # The register counts imported energy (a net meter keeps export on a register of its own).
    imported = np.maximum(total, 0.0)
    energy = 5_000_000 + np.concatenate([[0.0], np.cumsum(imported[:-1]) * step / 3600])
    times = t0 + np.arange(n, dtype=np.float64) * step
    return Trace(asset_id or f"meter-{seed}", times, total, energy, sessions, ev)
