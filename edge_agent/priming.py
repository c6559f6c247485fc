"""A gateway new to its meters, primed with their history.

A running agent learns each meter's house from its own readings: the loads that cycle, the
hours its AC runs through the heat, its exports, its EV's charging power. Until it has (a week
or more), it holds every candidate to a cycler's rule and loses charges. A utility has the
meter's past weeks in its meter data management system; replayed through the live detector,
they teach it the house before its first live reading, as if the agent had run over them.
Only what it learnt of the house is kept, not the sessions nor the floor (nothing of the
history is published). Where the live detector's sessions did not agree on the EV's power
(half of them at one power), the offline mode judges that meter's history whole, and its
sessions, weeded of other loads (a pump on a timer, loads under half the typical power),
teach it. Readings stream through, one detector a meter: only those meters' histories are
held whole. Pure: readings in, detectors out.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable

from edge_agent.detector import DetectorConfig, MeterDetector
from edge_agent.offline import Reading, detect

log = logging.getLogger(__name__)


def primed(
    asset_id: str,
    history: Iterable[tuple[float, float, float | None]],
    config: DetectorConfig | None = None,
) -> MeterDetector:
    """A detector for a meter new to the agent that knows its house from the meter's
    ``history`` (its readings in time order, before the first it will be fed)."""
    readings = [(asset_id, t, p, e) for t, p, e in history]
    return primed_meters(lambda: readings, config)[asset_id]


def primed_meters(
    read: Callable[[], Iterable[Reading]], config: DetectorConfig | None = None
) -> dict[str, MeterDetector]:
    """A primed detector for each meter in the history ``read`` gives (each call reads it
    from the start: a file's meters interleaved or one after another, each meter's readings
    in time order; one out of order is skipped as a running agent skips it, and the meter is
    named with their count)."""
    config = config or DetectorConfig()
    scratch: dict[str, MeterDetector] = {}
    for asset_id, t, power, energy in read():
        det = scratch.get(asset_id)
        if det is None:  # as the agent would have met it
            det = scratch[asset_id] = MeterDetector(asset_id, config, warms_up=True)
        det.update(t, power, energy)
    for det in scratch.values():
        if det.dropped_readings:
            log.warning(
                "history of %s: %d readings out of time order skipped",
                det.asset_id, det.dropped_readings,
            )  # fmt: skip
    unsure = {asset_id for asset_id, det in scratch.items() if det.house.charging_w is None}
    if unsure:
        powers: dict[str, list[float]] = defaultdict(list)
        for ended in detect((r for r in read() if r[0] in unsure), config):
            powers[ended.asset_id].append(ended.ev_peak_power_w)
        for asset_id, peaks in powers.items():
            if len(peaks) >= config.household_min_sessions:
                house = scratch[asset_id].house
                house.session_powers = peaks[-config.house_power_memory :]
                house.judge_charging_power()
    return {asset_id: _knowing_its_house(det) for asset_id, det in scratch.items()}


def _knowing_its_house(scratch: MeterDetector) -> MeterDetector:
    det = MeterDetector(scratch.asset_id, scratch.config, warms_up=True)
    det.house = scratch.house
    return det
