"""The edge agent's replay speed with the second look and without it, in the same run.

    PYTHONPATH=. .venv/bin/python -m bench.edge_replay [--meters 10] [--days 14] [--rounds 2]

A fleet of simulated 1-minute meters is replayed through ``EdgeAgent`` at full speed into a
fresh SQLite store (the agent's own, ``synchronous=FULL``), once with the second look (readings
kept, a look a day per meter once 7 days are in) and once without (``EDGE_SECOND_LOOK_DAYS=0``),
alternating, ``--rounds`` times each. Printed: readings a second, looks' late sessions, and the
store's size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench.detector_accuracy import DATA
from edge_agent.agent import EdgeAgent
from edge_agent.metrics import EdgeMetrics
from edge_agent.simulator import HouseholdSpec, load_real_data, simulate_household
from edge_agent.sources import simulated_fleet
from edge_agent.store import AgentStore


def replay(readings: list, second_look_days: int) -> tuple[float, float, int]:
    """Seconds to process ``readings``, late sessions sent, and the store's bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "agent.sqlite3"
        store, registry = AgentStore(path), CollectorRegistry()
        try:
            agent = EdgeAgent(
                site_id="bench",
                store=store,
                metrics=EdgeMetrics(registry),
                second_look_days=second_look_days,
            )
            began = time.perf_counter()
            agent.process(iter(readings))
            took = time.perf_counter() - began
        finally:
            store.close()
        late = registry.get_sample_value("ev_edge_second_look_sessions_total") or 0.0
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    return took, late, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--meters", type=int, default=10)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    real = load_real_data(DATA)
    traces = [
        simulate_household(seed, HouseholdSpec(days=args.days), real, asset_id=f"m{seed}").resample(
            60
        )
        for seed in range(args.meters)
    ]
    readings = list(simulated_fleet(traces))
    print(f"{args.meters} meters x {args.days} days at 1 min: {len(readings):,} readings")
    print("| agent | run | seconds | readings/s | late sessions | store MB |")
    print("|---|---|---|---|---|---|")
    for run in range(1, args.rounds + 1):
        for label, days in (("second look (14 d)", 14), ("no second look", 0)):
            took, late, size = replay(readings, days)
            print(
                f"| {label} | {run} | {took:.1f} | {len(readings) / took:,.0f} | {late:.0f} "
                f"| {size / 1e6:.1f} |"
            )


if __name__ == "__main__":
    main()
