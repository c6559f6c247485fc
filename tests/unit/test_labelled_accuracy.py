"""Scoring the detector on labelled meter data (whole house + EV circuit), read from a file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from bench.detector_accuracy import (
    WEEK_S,
    by_week,
    detected_intervals,
    truth_intervals,
    write_circuit_export,
)
from bench.labelled_accuracy import circuit_sessions, evaluate, main, read_labelled
from bench.scoring import Interval, iou, score
from edge_agent.detector import DETECTOR_VERSION, DetectorConfig
from edge_agent.offline import InputError
from edge_agent.simulator import HouseholdSpec, Trace, simulate_household

CENTRAL = timezone(timedelta(hours=-5))


def _write_pecan_style(path: Path, traces: list[Trace], *, kw: bool, zone: timezone) -> None:
    """Meter id, local time with its offset, whole-house ``grid`` and the EV's ``car1``."""
    columns = ("dataid", "localminute", "grid", "car1")
    write_circuit_export(path, traces, unit_w=1000.0 if kw else 1.0, zone=zone, columns=columns)


def _houses() -> list[Trace]:
    spec = HouseholdSpec(days=7, hot_days=True, abrupt_ends=True)
    return [simulate_household(seed, spec).resample(60) for seed in (40, 43)]


def test_circuit_sessions_join_pauses_and_leave_out_blips() -> None:
    minutes = np.arange(24 * 60, dtype=float) * 60.0
    ev = np.zeros(len(minutes))
    ev[60:120] = 3600.0  # an hour's charge...
    ev[130:160] = 3600.0  # ... a 10-min pause, half an hour more: one session
    ev[400:404] = 3600.0  # a 4-min blip (preconditioning): no session
    ev[600:700] = 1400.0  # a Level 1 charge after a long stop: a second session
    ev[700:705] = 300.0  # its taper's tail under the on threshold: not part of it
    sessions = circuit_sessions(minutes, ev)
    assert [(s.start, s.end) for s in sessions] == [(3600.0, 9600.0), (36_000.0, 42_000.0)]
    assert sessions[0].energy_wh == pytest.approx(3600.0 * 90 / 60)
    assert sessions[0].level_w == 3600.0
    assert sessions[1].energy_wh == pytest.approx(1400.0 * 100 / 60)
    # A pause longer than the join limit ends the session.
    assert len(circuit_sessions(minutes, ev, merge_gap_s=5 * 60.0)) == 3


def test_a_circuit_export_in_kw_at_local_time_scores_as_the_benchmark_does(
    tmp_path: Path,
) -> None:
    traces = _houses()
    export = tmp_path / "circuits.csv"
    _write_pecan_style(export, traces, kw=True, zone=CENTRAL)
    meters = read_labelled(
        export,
        time_column="localminute",
        house_column="grid",
        ev_columns=["car1"],
        meter_column="dataid",
        unit="kW",
    )
    assert sorted(meters) == sorted(t.asset_id for t in traces)
    config = DetectorConfig()
    _, _, per_meter = evaluate(meters, config)
    for trace in traces:
        read = meters[trace.asset_id].trace
        np.testing.assert_array_equal(read.times, trace.times)  # offsets honoured
        np.testing.assert_allclose(read.power_w, trace.power_w, atol=0.1)  # kW scaled to W
        # The circuit shows the simulator's own sessions...
        truth, from_circuit = truth_intervals(trace), truth_intervals(read)
        assert len(from_circuit) == len(truth) > 0
        assert all(iou(a, b) >= 0.9 for a, b in zip(truth, from_circuit, strict=True))
        # ... and the detector, given the house's power only, finds what the benchmark finds.
        bench = score(truth, detected_intervals(trace, config))
        assert per_meter[trace.asset_id].detected == bench.detected
        assert per_meter[trace.asset_id].matched == bench.matched


def test_the_command_prints_the_detector_beside_the_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "circuits.csv"
    _write_pecan_style(export, _houses(), kw=False, zone=UTC)
    argv = ["--input", str(export), "--time-column", "localminute", "--house-column", "grid"]
    argv += ["--ev-column", "car1", "--meter-column", "dataid", "--per-meter"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0]: line.split(" | ") for line in out.splitlines()}
    detector, baseline = rows["| detector"], rows["| threshold baseline"]
    assert float(detector[5]) > float(baseline[5])  # F1
    assert "| meter-40 |" in out
    assert "| meter-43 |" in out


def test_naive_timestamps_are_refused_unless_a_zone_is_given(tmp_path: Path) -> None:
    export = tmp_path / "naive.csv"
    export.write_text(
        "timestamp,power_w,ev_power_w\n2024-07-01 10:00:00,500,0\n2024-07-01 10:01:00,4100,3600\n"
    )
    with pytest.raises(InputError, match="--timezone") as err:
        read_labelled(export)
    assert err.value.line == 2
    chicago = read_labelled(export, assume_tz=ZoneInfo("America/Chicago"))
    first = datetime(2024, 7, 1, 15, 0, tzinfo=UTC).timestamp()  # CDT is UTC-5
    assert chicago["naive"].trace.times[0] == first


def test_kw_read_as_watts_or_a_missing_column_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "circuits.csv"
    _write_pecan_style(export, _houses(), kw=True, zone=UTC)
    with pytest.raises(InputError, match="--unit kW"):
        read_labelled(
            export, time_column="localminute", house_column="grid", ev_columns=["car1"], unit="W"
        )
    with pytest.raises(InputError, match="no column car2"):
        read_labelled(export, time_column="localminute", house_column="grid", ev_columns=["car2"])
    assert main(["--input", str(export), "--time-column", "localminute"]) == 2
    assert "no column power_w, ev_power_w" in capsys.readouterr().err


def test_a_row_with_text_for_power_is_named_by_its_line(tmp_path: Path) -> None:
    export = tmp_path / "bad.csv"
    export.write_text(
        "timestamp,power_w,ev_power_w\n"
        "2024-07-01T10:00:00Z,500,0\n"
        "2024-07-01T10:01:00Z,n/a,0\n"
        "2024-07-01T10:02:00Z,,\n"  # a missing reading: skipped, not an error
    )
    with pytest.raises(InputError, match="not numbers") as err:
        read_labelled(export)
    assert err.value.line == 3


def test_the_benchmarks_own_export_reads_with_the_defaults(tmp_path: Path) -> None:
    traces = _houses()
    export = tmp_path / "circuits.csv"
    write_circuit_export(export, traces)  # what bench.detector_accuracy --export-circuits writes
    meters = read_labelled(export, meter_column="meter")
    for trace in traces:
        read = meters[trace.asset_id].trace
        np.testing.assert_array_equal(read.times, trace.times)
        assert len(read.sessions) == len(trace.sessions)


def test_a_home_with_two_cars_has_each_circuits_sessions(tmp_path: Path) -> None:
    """Two EV circuits: each one's charges are true sessions, overlapping or not; an empty cell
    (a circuit not logged that minute) counts as not charging and is counted."""
    export = tmp_path / "two_cars.csv"
    start = datetime(2024, 7, 1, tzinfo=UTC)
    rows = ["timestamp,power_w,car1,car2"]
    for minute in range(12 * 60):
        car1 = 7000.0 if 60 <= minute < 240 else 0.0
        car2 = 3600.0 if 180 <= minute < 420 else 0.0
        cell = "" if minute == 500 else f"{car2:.0f}"
        stamp = (start + timedelta(minutes=minute)).isoformat()
        rows.append(f"{stamp},{500 + car1 + car2:.0f},{car1:.0f},{cell}")
    export.write_text("\n".join(rows) + "\n")
    meters = read_labelled(export, ev_columns=["car1", "car2"])
    labelled = meters["two_cars"]
    t0 = start.timestamp()
    spans = [(s.start - t0, s.end - t0) for s in labelled.trace.sessions]
    assert spans == [(3600.0, 14_400.0), (10_800.0, 25_200.0)]
    assert labelled.ev_missing == 1
    assert labelled.trace.ev_power_w is not None
    assert labelled.trace.ev_power_w.max() == 10_600.0  # both circuits, summed


def test_sessions_are_scored_in_the_week_they_began() -> None:
    first = 1_000_000.0
    over_the_weeks_end = Interval(first + WEEK_S - 3600, first + WEEK_S + 3600, 1.0)
    second_week = Interval(first + WEEK_S + 7200, first + WEEK_S + 9000, 1.0)
    third_week = Interval(first + 2 * WEEK_S + 60, first + 2 * WEEK_S + 3600, 1.0)
    weeks = by_week(first, [over_the_weeks_end, second_week], [over_the_weeks_end, third_week])
    assert weeks == [
        ([over_the_weeks_end], [over_the_weeks_end]),
        ([second_week], []),
        ([], [third_week]),
    ]


def test_tuned_thresholds_are_scored_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A utility tunes the detector on its own meters: the thresholds given reach the detector
    (an EV range over every car's power finds nothing) and the report names them; a name the
    detector does not have is refused."""
    export = tmp_path / "circuits.csv"
    _write_pecan_style(export, _houses(), kw=False, zone=UTC)
    argv = ["--input", str(export), "--time-column", "localminute", "--house-column", "grid"]
    argv += ["--ev-column", "car1", "--meter-column", "dataid"]
    assert main([*argv, "--detector", "min_ev_power_w=20000"]) == 0
    out = capsys.readouterr().out
    assert f"detector {DETECTOR_VERSION}+min_ev_power_w=20000 -->" in out
    detector = {line.split(" | ")[0]: line.split(" | ") for line in out.splitlines()}["| detector"]
    assert detector[2] == "0"  # none detected
    with pytest.raises(SystemExit) as refused:
        main([*argv, "--detector", "min_ev_powr_w=2000"])
    assert refused.value.code == 2
    assert "did you mean min_ev_power_w" in capsys.readouterr().err
