"""Session-level scoring: one-to-one matching at temporal IoU >= 0.5."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    start: float
    end: float
    energy_wh: float


@dataclass(frozen=True)
class Score:
    true_sessions: int
    detected: int
    matched: int
    precision: float
    recall: float
    f1: float
    median_start_error_min: float
    median_end_error_min: float
    median_energy_error_pct: float


def iou(a: Interval, b: Interval) -> float:
    overlap = min(a.end, b.end) - max(a.start, b.start)
    if overlap <= 0:
        return 0.0
    union = max(a.end, b.end) - min(a.start, b.start)
    return overlap / union


def match(
    truth: Sequence[Interval], found: Sequence[Interval], threshold: float = 0.5
) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by descending IoU."""
    pairs = sorted(
        (
            (iou(t, f), i, j)
            for i, t in enumerate(truth)
            for j, f in enumerate(found)
            if t.start < f.end and f.start < t.end
        ),
        reverse=True,
    )
    used_t: set[int] = set()
    used_f: set[int] = set()
    out = []
    for value, i, j in pairs:
        if value < threshold or i in used_t or j in used_f:
            continue
        used_t.add(i)
        used_f.add(j)
        out.append((i, j))
    return out


def score(truth: Sequence[Interval], found: Sequence[Interval]) -> Score:
    pairs = match(truth, found)
    tp = len(pairs)
    precision = tp / len(found) if found else 1.0
    recall = tp / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    return Score(
        true_sessions=len(truth),
        detected=len(found),
        matched=tp,
        precision=precision,
        recall=recall,
        f1=f1,
        median_start_error_min=median(
            [abs(found[j].start - truth[i].start) / 60 for i, j in pairs]
        ),
        median_end_error_min=median([abs(found[j].end - truth[i].end) / 60 for i, j in pairs]),
        median_energy_error_pct=median(
            [
                abs(found[j].energy_wh - truth[i].energy_wh) / truth[i].energy_wh * 100
                for i, j in pairs
            ]
        ),
    )
