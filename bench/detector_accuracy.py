"""Detector accuracy on simulated households with known sessions, at 1 s, 1 min and 15 min.

    .venv/bin/python -m bench.detector_accuracy [--houses 40] [--days 14] [--first-seed 40]
        [--solar] [--pool] [--hot-days] [--abrupt-ends] [--two-acs] [--variable-speed-ac]
        [--ev-kw 3.3 4] [--live [--second-look | --history-days 14]] [--known-charging-power]
        [--per-house] [--minutes 5 10] [--by-week]

Households: half on the real UCI base load (with added hot-climate confounders), half synthetic;
all with AC cycles, water heaters, dryers, ovens, ranges and well pumps; EV sessions' start hours
and energies drawn from the real Norwegian residential sessions. The offline mode (``python -m
edge_agent detect``) is scored, or with ``--live`` the agent's detector reading by reading
(no look at the whole file), and with ``--second-look`` besides it the agent's daily second
look over each meter's last 14 days (``edge_agent/second_look.py``), scored beside the live
detector alone in the same run; with ``--history-days N`` the agent meets each meter after N
days of its trace, primed with them (``edge_agent/priming.py``), scored beside one that met it
cold. A naive baseline (power above
the house's median by >= 1.2 kW for >= 15 min) is scored on the same traces in the same run.
With ``--solar`` every house also has rooftop PV behind its meter (net power, passing clouds);
with ``--pool`` a third of the hot-climate houses have a pool pump on a daily timer; with
``--hot-days`` half the days of a hot-climate house have an afternoon its AC runs through; with
``--abrupt-ends`` every charge stops within 1-5 min (a charge limit) instead of tapering; with
``--two-acs`` half the hot-climate houses have a second AC (1.8-3.2 kW, an upper floor's); with
``--variable-speed-ac`` half of them have a variable-speed heat pump instead of a cycling AC.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from datetime import UTC, datetime, tzinfo
from pathlib import Path

import numpy as np

from bench.scoring import Interval, Score, score
from edge_agent.detector import DetectorConfig, MeterDetector
from edge_agent.offline import detect
from edge_agent.priming import primed
from edge_agent.second_look import SecondLook
from edge_agent.simulator import HouseholdSpec, Trace, load_real_data, simulate_household
from schemas.pleevi import TransactionState

WEEK_S = 7 * 86_400.0
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# The simulator's optional extras (``HouseholdSpec`` fields), each a flag of the same name.
TRACE_EXTRAS = {
    "solar": "rooftop PV behind every meter (net power)",
    "pool": "a pool pump on a timer in a third of hot houses",
    "hot_days": "half the days, the AC runs without a break for 2-5 h of the afternoon",
    "abrupt_ends": "every charge stops within 1-5 min (at a charge limit), no 10-40 min taper",
    "two_acs": "a second AC in half the hot-climate houses",
    "variable_speed_ac": "a variable-speed heat pump instead of a cycling AC in half the "
    "hot-climate houses",
}


def detected_intervals(
    trace: Trace,
    config: DetectorConfig,
    live: bool = False,
    charging_power_w: float | None = None,
    *,
    second_look: bool = False,
    primed_until: float | None = None,
) -> list[Interval]:
    """Sessions found by the offline mode, or (``live``) by the agent's detector reading by
    reading, without the offline mode's look at the whole file; either told the EV's
    ``charging_power_w``, if given. With ``primed_until`` (live), the agent meets the meter
    then, primed with the readings before (``edge_agent.priming``), and the sessions that
    began from then on are returned."""
    readings: list[tuple[str, float, float, float | None]] = [
        (trace.asset_id, float(t), float(p), None if math.isnan(e) else float(e))
        for t, p, e in zip(trace.times, trace.power_w, trace.energy_wh, strict=True)
    ]  # a trace without an energy register (NaN) gives the detector none
    if live:
        if primed_until is not None:
            history = [(t, p, e) for _, t, p, e in readings if t < primed_until]
            det = primed(trace.asset_id, history, config)
            readings = [r for r in readings if r[1] >= primed_until]
        else:
            det = MeterDetector(trace.asset_id, config, warms_up=True)  # as the agent meets one
        if charging_power_w is not None:
            det.house.know_charging_power(charging_power_w)  # as EDGE_CHARGING_POWER_W tells it
        looks = SecondLook(trace.asset_id) if second_look else None
        seen: list[tuple[float, float, float | None]] = []
        ended = []
        for _, t, p, e in readings:
            if looks is not None:  # as the agent does it (``EdgeAgent._second_look``)
                if looks.due(t):
                    since = t - looks.window_s
                    ended += looks.look(
                        [r for r in seen if r[0] >= since],
                        t,
                        det.deciding_since(),
                        det.house,
                        charging_power_w=charging_power_w,
                    )
                seen.extend(looks.keep(t, p, e))
            for tr in det.update(t, p, e):
                ended.append(tr)
                if looks is not None and tr.state is TransactionState.ENDED:
                    looks.publish(tr.start_time, tr.stop_time or tr.timestamp)
        found = [tr for tr in ended + det.finish() if tr.state is TransactionState.ENDED]
    else:
        found = list(detect(readings, config, charging_power_w=charging_power_w))
    since = primed_until if primed_until is not None else -math.inf
    return [
        Interval(tr.start_time, tr.stop_time or tr.timestamp, tr.ev_energy_wh)
        for tr in found
        if tr.start_time >= since
    ]


def threshold_baseline(trace: Trace) -> list[Interval]:
    """The simple published-style rule: above median + 1.2 kW for at least 15 minutes."""
    above = trace.power_w > np.median(trace.power_w) + 1200
    dt = float(trace.times[1] - trace.times[0])
    out, start = [], None
    for i, flag in enumerate(above):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if (i - start) * dt >= 900:
                energy = float(
                    (trace.power_w[start:i] - np.median(trace.power_w)).sum() * dt / 3600
                )
                out.append(Interval(float(trace.times[start]), float(trace.times[i]), energy))
            start = None
    return out


def truth_intervals(trace: Trace) -> list[Interval]:
    return [Interval(s.start, s.end, s.energy_wh) for s in trace.sessions]


def by_week(
    first: float, truth: list[Interval], found: list[Interval]
) -> list[tuple[list[Interval], list[Interval]]]:
    """The true and detected sessions of each week from ``first``, by their start (a session
    over a week's end counts in the week it began, true and detected alike)."""
    last = max((i.start for i in truth + found), default=first)
    weeks = []
    for k in range(int((last - first) // WEEK_S) + 1):
        lo, hi = first + k * WEEK_S, first + (k + 1) * WEEK_S
        weeks.append(
            ([i for i in truth if lo <= i.start < hi], [i for i in found if lo <= i.start < hi])
        )
    return weeks


def pooled(scores: list[tuple[list[Interval], list[Interval]]]) -> Score:
    truth: list[Interval] = []
    found: list[Interval] = []
    offset = 0.0
    # Shift each house into its own time range so that pooling keeps matches within a house.
    for t, f in scores:
        truth += [Interval(i.start + offset, i.end + offset, i.energy_wh) for i in t]
        found += [Interval(i.start + offset, i.end + offset, i.energy_wh) for i in f]
        offset += 1e9
    return score(truth, found)


# A home energy monitor's circuit export, as ``bench.labelled_accuracy`` reads it by default.
CIRCUIT_COLUMNS = ("meter", "timestamp", "power_w", "ev_power_w")


def write_circuit_export(
    path: Path,
    traces: list[Trace],
    *,
    unit_w: float = 1.0,
    zone: tzinfo = UTC,
    columns: tuple[str, str, str, str] = CIRCUIT_COLUMNS,
) -> None:
    """Traces as a home energy monitor exports its circuits: meter id, time (ISO 8601 in
    ``zone``), the whole house's power and the EV circuit's (in W, or kW with ``unit_w``
    1000): labelled data for ``bench.labelled_accuracy``."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(columns)
        for trace in traces:
            assert trace.ev_power_w is not None
            for t, p, ev in zip(trace.times, trace.power_w, trace.ev_power_w, strict=True):
                stamp = datetime.fromtimestamp(float(t), zone).isoformat(sep=" ")
                out.writerow([trace.asset_id, stamp, f"{p / unit_w:.4f}", f"{ev / unit_w:.4f}"])


def fmt(name: str, s: Score) -> str:
    return (
        f"| {name} | {s.true_sessions} | {s.detected} | {s.precision:.3f} | {s.recall:.3f} "
        f"| {s.f1:.3f} | {s.median_start_error_min:.1f} | {s.median_end_error_min:.1f} "
        f"| {s.median_energy_error_pct:.1f} |"
    )


def ev_power(trace: Trace) -> float | None:
    """The house's EV's own charging power (one car, one charger), if it charged."""
    levels = [s.level_w for s in trace.sessions]
    return float(np.median(levels)) if levels else None


def fmt_house(seed: int | str, trace: Trace, s: Score) -> str:
    power = ev_power(trace)
    kw = f"{power / 1000:.1f}" if power is not None else "-"
    return f"| {seed} | {kw} | {s.true_sessions} | {s.detected} | {s.matched} | {s.f1:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--houses", type=int, default=40)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--houses-1s", type=int, default=6, help="1 s traces are 60x larger")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="house seeds start here (40: ones not tuned on)"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="score the live agent's detector (reading by reading) instead of the offline mode",
    )
    parser.add_argument(
        "--second-look",
        action="store_true",
        help="with --live: the live detector and its daily second look, beside it alone",
    )
    for name, help_text in TRACE_EXTRAS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", action="store_true", help=help_text)
    parser.add_argument(
        "--ev-kw",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="score only the houses whose EV charges at MIN-MAX kW (e.g. 3.3 4: an AC's size)",
    )
    parser.add_argument(
        "--history-days",
        type=int,
        default=0,
        metavar="N",
        help="with --live: the agent meets each meter after N days of its trace, primed with "
        "them (EDGE_HISTORY), scored on the --days after beside one that met it cold",
    )
    parser.add_argument(
        "--known-charging-power",
        action="store_true",
        help="tell the detector each house's true EV power instead of learning it (the most "
        "that learning it better could gain; live, what EDGE_CHARGING_POWER_W gains)",
    )
    parser.add_argument(
        "--per-house", action="store_true", help="also print each house's 1 min score"
    )
    parser.add_argument(
        "--by-week",
        action="store_true",
        help="also score the 1 min sessions week by week of the trace (by start; with --live: "
        "how a running agent does as it learns its house)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        nargs="+",
        default=[],
        metavar="M",
        help="also score these resolutions, in minutes (e.g. 5, as many AMI meters report)",
    )
    parser.add_argument(
        "--export-circuits",
        type=Path,
        metavar="FILE",
        help="also write the 1 min traces as a circuit export (house + EV circuit, W) for "
        "bench.labelled_accuracy --meter-column meter",
    )
    parser.add_argument(
        "--data", type=Path, default=DATA, help="the real base loads and sessions (shared/data)"
    )
    args = parser.parse_args()
    if (args.second_look or args.history_days) and not args.live:
        parser.error("--second-look and --history-days score the live agent: pass --live too")
    if args.second_look and args.history_days:
        parser.error("--history-days is scored beside a cold start, not beside a second look")
    real = load_real_data(args.data)
    if real.base_w is None or real.session_hours is None:
        # Without them every house is synthetic and every figure comes out higher: not the
        # figures the README states, so not a run to compare with them.
        parser.error(f"the real data files are not in {args.data} (pass --data DIR)")
    config = DetectorConfig()
    print(
        "| resolution | sessions | detected | precision | recall | F1 | median start err (min) "
        "| median end err (min) | median energy err (%) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    house_rows: list[str] = []
    weeks: dict[int, list[tuple[list[Interval], list[Interval]]]] = {}
    exported: list[Trace] = []
    for label, resolution, houses in (
        ("1 s", 1, args.houses_1s),
        ("1 min", 60, args.houses),
        ("15 min", 900, args.houses),
        *((f"{m:g} min", round(m * 60), args.houses) for m in args.minutes),
    ):
        if houses == 0:
            continue  # an empty run would print a meaningless perfect score
        ours, naive, alone = [], [], []
        scored = 0
        began = time.perf_counter()
        for seed in range(args.first_seed, args.first_seed + houses):
            spec = HouseholdSpec(
                days=args.days + args.history_days,
                step_s=1 if resolution == 1 else 10,
                hot_climate=seed % 4 != 3,
                **{name: getattr(args, name) for name in TRACE_EXTRAS},
            )
            trace = simulate_household(seed, spec, real).resample(resolution)
            if args.ev_kw and not any(
                args.ev_kw[0] * 1000 <= s.level_w <= args.ev_kw[1] * 1000 for s in trace.sessions
            ):
                continue
            scored += 1
            met = float(trace.times[0]) + args.history_days * 86_400.0
            truth = [i for i in truth_intervals(trace) if i.start >= met]
            known = ev_power(trace) if args.known_charging_power else None
            primed_until = met if args.history_days else None
            found = detected_intervals(
                trace,
                config,
                args.live,
                known,
                second_look=args.second_look,
                primed_until=primed_until,
            )
            ours.append((truth, found))
            if args.second_look:
                alone.append((truth, detected_intervals(trace, config, args.live, known)))
            if args.history_days:
                cold = detected_intervals(trace.since(met), config, args.live, known)
                alone.append((truth, cold))
            naive.append((truth, threshold_baseline(trace.since(met))))
            if args.per_house and resolution == 60:
                house_rows.append(fmt_house(seed, trace, score(truth, found)))
            if args.by_week and resolution == 60:
                for week, pair in enumerate(by_week(float(trace.times[0]), truth, found)):
                    weeks.setdefault(week, []).append(pair)
            if args.export_circuits and resolution == 60:
                exported.append(trace)
        if args.second_look:
            print(fmt(f"{label} (live + second look)", pooled(ours)))
            print(fmt(f"{label} (live alone)", pooled(alone)))
        elif args.history_days:
            print(fmt(f"{label} (live, primed with {args.history_days} days)", pooled(ours)))
            print(fmt(f"{label} (live, cold)", pooled(alone)))
        else:
            print(fmt(f"{label} (detector)", pooled(ours)))
        print(fmt(f"{label} (threshold baseline)", pooled(naive)))
        took = time.perf_counter() - began
        print(f"<!-- {label}: {scored} houses x {args.days} days in {took:.1f} s -->")
    if args.export_circuits:
        write_circuit_export(args.export_circuits, exported)
    if weeks:
        print("\n| 1 min, week | sessions | detected | precision | recall | F1 |")
        print("|---|---|---|---|---|---|")
        for week, pairs in sorted(weeks.items()):
            w = pooled(pairs)
            print(f"| {week + 1} | {w.true_sessions} | {w.detected} | {w.precision:.3f} "
                  f"| {w.recall:.3f} | {w.f1:.3f} |")  # fmt: skip
    if house_rows:
        print("\n| house | EV kW | sessions | detected | matched | F1 |")
        print("|---|---|---|---|---|---|")
        print("\n".join(house_rows))


if __name__ == "__main__":
    main()
