"""A gateway new to its meters, primed with their history.

A running agent learns each meter's house from its own readings: the loads that cycle, the
hours its AC runs through the heat, its exports, its EV's charging power. Until it has (a week
or more), it holds every candidate to a cycler's rule and loses charges. A utility has the
meter's past weeks in its meter data management system; replayed through the live detector,
they teach it the house before its first live reading, as if the agent had run over them.
Only what it learnt of the house is kept, not the sessions nor the floor (nothing of the
history is published). Pure: readings in, detectors out.
"""

from __future__ import annotations

from collections.abc import Iterable

from edge_agent.detector import DetectorConfig, MeterDetector
from edge_agent.offline import Reading, by_meter


def primed(
    asset_id: str,
    history: Iterable[tuple[float, float, float | None]],
    config: DetectorConfig | None = None,
) -> MeterDetector:
    """A detector for a meter new to the agent that knows its house from the meter's
    ``history`` (readings in time order, before the first it will be fed)."""
    config = config or DetectorConfig()
    scratch = MeterDetector(asset_id, config, warms_up=True)  # as the agent would have met it
    for t, power, energy in history:
        scratch.update(t, power, energy)
    det = MeterDetector(asset_id, config, warms_up=True)
    det.house = scratch.house
    return det


def primed_meters(
    readings: Iterable[Reading], config: DetectorConfig | None = None
) -> dict[str, MeterDetector]:
    """A primed detector for each meter in ``readings`` (a history file's, any order)."""
    return {
        asset_id: primed(asset_id, meter.in_time_order(), config)
        for asset_id, meter in by_meter(readings).items()
    }
