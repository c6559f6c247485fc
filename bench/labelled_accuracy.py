"""Detector accuracy on real labelled data: whole-house power with the EV's own circuit beside it.

    .venv/bin/python -m bench.labelled_accuracy --input FILE [--timezone TZ]
        [--time-column timestamp] [--house-column power_w] [--ev-column ev_power_w ...]
        [--meter-column COLUMN] [--unit W|kW] [--ev-on-w 500] [--merge-gap-min 30]
        [--min-session-min 10] [--per-meter]

A CSV with a header: a timestamp (ISO 8601; naive ones only with ``--timezone``), the whole
house's power and the EV circuit's power (a home energy monitor's sub-circuit export), and,
for a file of several homes, a meter id column. A circuit export in kW with a meter column,
local time with its offset (``2018-06-01 00:00:00-05``):

    --time-column localminute --house-column grid --ev-column car1 car2 --meter-column dataid \\
        --unit kW

(a home with two cars has a circuit for each: every circuit's sessions are true sessions).

The EV circuit gives the true sessions: it draws ``--ev-on-w`` or more, its stops of up to
``--merge-gap-min`` are pauses within one session, and a session shorter than
``--min-session-min`` is not a charge (a car's preconditioning, a charger's handshake). Only
the house's power goes to the detector (the offline mode, ``python -m edge_agent detect``;
no energy register: power x time), scored as ``bench.detector_accuracy`` scores simulated
houses (one-to-one matching at IoU >= 0.5), beside the same threshold baseline.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from bench.detector_accuracy import (
    detected_intervals,
    fmt,
    fmt_house,
    pooled,
    threshold_baseline,
    truth_intervals,
)
from bench.scoring import Interval, Score, score
from edge_agent.detector import DetectorConfig, threshold_pairs
from edge_agent.offline import PLAUSIBLE_HOUSE_W, InputError, parse_timestamp
from edge_agent.simulator import GroundTruthSession, Trace

_UNITS = {"W": 1.0, "kW": 1000.0}


@dataclass
class _Columns:
    """One meter's readings as read, in file order: each EV circuit's power in its own array."""

    ev_w: list[array[float]]
    times: array[float] = field(default_factory=lambda: array("d"))
    house_w: array[float] = field(default_factory=lambda: array("d"))


@dataclass(frozen=True)
class LabelledMeter:
    """A meter's readings in time order with the sessions its EV circuit shows."""

    trace: Trace
    ev_missing: int  # readings whose EV circuit value was empty (taken as not charging)


def circuit_sessions(
    times: np.ndarray,
    ev_w: np.ndarray,
    *,
    on_w: float = 500.0,
    merge_gap_s: float = 30 * 60.0,
    min_s: float = 10 * 60.0,
) -> list[GroundTruthSession]:
    """The charging sessions an EV circuit's readings show (each reading the mean over the
    interval it starts): runs at ``on_w`` or more, joined across stops of up to
    ``merge_gap_s`` (a pause), kept if ``min_s`` or longer. Energy is the circuit's over the
    whole session, its pauses included."""
    if len(times) == 0:
        return []
    dt = float(np.median(np.diff(times))) if len(times) > 1 else 60.0
    on = np.flatnonzero(ev_w >= on_w)
    if len(on) == 0:
        return []
    # Runs of consecutive readings on; a reading's interval ends dt after it starts.
    breaks = np.flatnonzero(np.diff(on) > 1)
    starts = np.concatenate([[on[0]], on[breaks + 1]])
    ends = np.concatenate([on[breaks], [on[-1]]])
    merged: list[list[int]] = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        if merged and times[a] - (times[merged[-1][1]] + dt) <= merge_gap_s:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    sessions = []
    for a, b in merged:
        start, end = float(times[a]), float(times[b]) + dt
        if end - start < min_s:
            continue
        span = ev_w[a : b + 1]
        charging = span[span >= on_w]
        sessions.append(
            GroundTruthSession(
                start=start,
                end=end,
                energy_wh=float(span.sum()) * dt / 3600.0,
                peak_w=float(charging.max()),
                level_w=float(np.median(charging)),
            )
        )
    return sessions


def read_labelled(
    path: Path,
    *,
    time_column: str = "timestamp",
    house_column: str = "power_w",
    ev_columns: Sequence[str] = ("ev_power_w",),
    meter_column: str | None = None,
    unit: str = "W",
    assume_tz: tzinfo | None = None,
    on_w: float = 500.0,
    merge_gap_s: float = 30 * 60.0,
    min_s: float = 10 * 60.0,
) -> dict[str, LabelledMeter]:
    """Each meter's readings and true sessions: each EV circuit's (a home with two cars has
    two), together. A row without the house's power is a missing reading (the detector bridges
    or ends across the gap, as with any meter's); a repeated timestamp keeps its first row.
    Raises ``InputError`` (with the line) for what cannot be read, and for power that is
    plainly not in ``unit``."""
    scale = _UNITS[unit]
    columns: dict[str, _Columns] = {}
    missing: dict[str, int] = {}
    with path.open(encoding="utf-8-sig", newline="") as stream:
        reader = csv.reader(stream)
        header = [h.strip() for h in next(reader, None) or []]
        wanted = [time_column, house_column, *ev_columns, *([meter_column] if meter_column else [])]
        absent = [name for name in wanted if name not in header]
        if absent:
            raise InputError(1, f"no column {', '.join(absent)} in the header ({header})")
        at, house = header.index(time_column), header.index(house_column)
        evs = [header.index(name) for name in ev_columns]
        meter_at = header.index(meter_column) if meter_column else None
        needed = max(at, house, *evs, -1 if meter_at is None else meter_at)
        for number, row in enumerate(reader, start=2):
            if len(row) <= needed or not row[at].strip():
                continue
            house_text, ev_texts = row[house].strip(), [row[k].strip() for k in evs]
            if not house_text:
                continue
            meter = row[meter_at].strip() if meter_at is not None else path.stem
            try:
                house_w = float(house_text) * scale
                ev_w = [float(text) * scale if text else 0.0 for text in ev_texts]
            except ValueError:
                raise InputError(
                    number, f"power not numbers: {house_text!r}, {', '.join(map(repr, ev_texts))}"
                ) from None
            if not all(map(math.isfinite, [house_w, *ev_w])):
                raise InputError(number, "power not finite")
            cols = columns.get(meter)
            if cols is None:
                cols = columns[meter] = _Columns([array("d") for _ in evs])
            cols.times.append(parse_timestamp(row[at], number, assume_tz))
            cols.house_w.append(house_w)
            for circuit, watts in zip(cols.ev_w, ev_w, strict=True):
                circuit.append(watts)
            missing[meter] = missing.get(meter, 0) + sum(not text for text in ev_texts)
    meters = {}
    for meter, cols in columns.items():
        times = np.asarray(cols.times)
        order = np.argsort(times, kind="stable")
        times = times[order]
        first = np.concatenate([[True], np.diff(times) > 0])  # a repeated timestamp: its first
        times = times[first]
        house_w = np.asarray(cols.house_w)[order][first]
        if len(times) > 1 and np.abs(house_w).max() < PLAUSIBLE_HOUSE_W:
            raise InputError(
                1,
                f"meter {meter}: {house_column} never reaches {PLAUSIBLE_HOUSE_W:.0f} {unit} "
                "converted to W: is it in kW (pass --unit kW)?",
            )
        circuits = [np.asarray(ev)[order][first] for ev in cols.ev_w]
        sessions = sorted(
            (
                session
                for ev_w in circuits
                for session in circuit_sessions(
                    times, ev_w, on_w=on_w, merge_gap_s=merge_gap_s, min_s=min_s
                )
            ),
            key=lambda session: session.start,
        )
        ev_total = np.sum(circuits, axis=0)
        trace = Trace(meter, times, house_w, np.full(len(times), np.nan), sessions, ev_total)
        meters[meter] = LabelledMeter(trace, missing[meter])
    return meters


def evaluate(
    meters: dict[str, LabelledMeter], config: DetectorConfig | None = None
) -> tuple[Score, Score, dict[str, Score]]:
    """The detector's pooled score, the threshold baseline's, and the detector's per meter."""
    config = config or DetectorConfig()
    ours: list[tuple[list[Interval], list[Interval]]] = []
    naive: list[tuple[list[Interval], list[Interval]]] = []
    per_meter = {}
    for meter, labelled in meters.items():
        trace = labelled.trace
        if len(trace.times) < 2:
            continue
        truth = truth_intervals(trace)
        found = detected_intervals(trace, config)
        ours.append((truth, found))
        naive.append((truth, threshold_baseline(trace)))
        per_meter[meter] = score(truth, found)
    return pooled(ours), pooled(naive), per_meter


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--timezone", help="IANA zone for timestamps without a UTC offset")
    parser.add_argument("--time-column", default="timestamp")
    parser.add_argument("--house-column", default="power_w", help="the whole house's power")
    parser.add_argument(
        "--ev-column",
        nargs="+",
        default=["ev_power_w"],
        help="the EV circuit's power (a column per car: each circuit's sessions are truth)",
    )
    parser.add_argument("--meter-column", help="a meter id column, for a file of several homes")
    parser.add_argument("--unit", choices=sorted(_UNITS), default="W", help="of both powers")
    parser.add_argument("--ev-on-w", type=float, default=500.0, help="the circuit is charging")
    parser.add_argument("--merge-gap-min", type=float, default=30.0, help="a pause, not an end")
    parser.add_argument("--min-session-min", type=float, default=10.0, help="a charge's least")
    parser.add_argument("--per-meter", action="store_true", help="also each meter's score")
    parser.add_argument(
        "--detector",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a detector threshold (a DetectorConfig field) in place of its default, repeatable: "
        "tuning on the utility's own meters (then EDGE_DETECTOR for its agents)",
    )
    args = parser.parse_args(argv)
    try:
        config = DetectorConfig.tuned(threshold_pairs(args.detector))
    except ValueError as exc:
        parser.error(str(exc))
    try:
        zone = ZoneInfo(args.timezone) if args.timezone else None
    except (ZoneInfoNotFoundError, ValueError):
        parser.error(f"unknown time zone {args.timezone!r}")
    try:
        meters = read_labelled(
            args.input,
            time_column=args.time_column,
            house_column=args.house_column,
            ev_columns=args.ev_column,
            meter_column=args.meter_column,
            unit=args.unit,
            assume_tz=zone,
            on_w=args.ev_on_w,
            merge_gap_s=args.merge_gap_min * 60.0,
            min_s=args.min_session_min * 60.0,
        )
    except (InputError, OSError) as exc:
        print(f"{args.input}: {exc}", file=sys.stderr)
        return 2
    if not meters:
        print(f"{args.input}: no readings", file=sys.stderr)
        return 2
    ours, naive, per_meter = evaluate(meters, config)
    days = sum(float(m.trace.times[-1] - m.trace.times[0]) for m in meters.values()) / 86_400
    gaps = [np.median(np.diff(m.trace.times)) for m in meters.values() if len(m.trace.times) > 1]
    missing = sum(m.ev_missing for m in meters.values())
    print(
        f"<!-- {args.input.name}: {len(meters)} meters, {days:.0f} meter-days, readings every "
        f"{float(np.median(gaps)) if gaps else 0:.0f} s; true sessions from the EV circuit at "
        f">= {args.ev_on_w:.0f} W, pauses <= {args.merge_gap_min:g} min joined, >= "
        f"{args.min_session_min:g} min; {missing} empty EV readings taken as not charging; "
        f"detector {config.version} -->"
    )
    print(
        "| scored | sessions | detected | precision | recall | F1 | median start err (min) "
        "| median end err (min) | median energy err (%) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(fmt("detector", ours))
    print(fmt("threshold baseline", naive))
    if args.per_meter:
        print("\n| meter | EV kW | sessions | detected | matched | F1 |")
        print("|---|---|---|---|---|---|")
        for meter, s in per_meter.items():
            print(fmt_house(meter, meters[meter].trace, s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
