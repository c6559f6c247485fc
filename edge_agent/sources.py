"""Reading sources behind one interface: an iterator of ``(asset, epoch s, W, Wh|None)``.

* :func:`replay_file` - CSV or Pleevi JSON Lines, as fast as possible or paced (``speed`` x);
* :func:`simulated_fleet` - the built-in household simulator, many meters merged by time;
* :class:`GatewaySource` - Pleevi measurements a metering gateway publishes on a local topic.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent.actuators import SimulatedChargers
from edge_agent.offline import Reading, read_file
from edge_agent.simulator import HouseholdSpec, RealData, Trace, simulate_household
from runtime.mqtt import MqttConnection
from schemas.pleevi import Measurement

log = logging.getLogger(__name__)


def paced(
    readings: Iterable[Reading],
    speed: float,
    stop: threading.Event | None = None,
    *,
    paced_from: float | None = None,
) -> Iterator[Reading]:
    """Release readings at ``speed`` times their own clock (0 = as fast as possible); those
    before ``paced_from`` (epoch s) at once: catch up on history, then go on live."""
    if speed <= 0:
        yield from readings
        return
    origin_wall = origin_t = None
    for reading in readings:
        t = reading[1]
        if paced_from is not None and t < paced_from:
            yield reading
            continue
        if origin_t is None:
            origin_wall, origin_t = time.monotonic(), t
        assert origin_wall is not None
        delay = origin_wall + (t - origin_t) / speed - time.monotonic()
        if delay > 0:
            if stop is not None:
                if stop.wait(delay):
                    return
            else:
                time.sleep(delay)
        yield reading


def replay_file(
    path: Path, *, speed: float = 0.0, assume_tz: tzinfo | None = None
) -> Iterator[Reading]:
    return paced(read_file(path, assume_tz), speed)


def simulated_fleet(
    traces: list[Trace], chargers: SimulatedChargers | None = None
) -> Iterator[Reading]:
    """All meters' readings merged in time order (EVs held to ``chargers``' limits)."""
    streams = [chargers.readings(t) if chargers else t.readings() for t in traces]
    return heapq.merge(*streams, key=lambda r: r[1])


def build_fleet(
    meters: int,
    *,
    days: int,
    resolution_s: int,
    seed: int = 0,
    real: RealData | None = None,
    start: datetime | None = None,
) -> list[Trace]:
    spec = HouseholdSpec(days=days, step_s=10 if resolution_s >= 10 else 1)
    if start is not None:
        spec = replace(spec, start=start)
    return [
        simulate_household(seed + i, spec, real, asset_id=f"meter-{seed + i:05d}").resample(
            resolution_s
        )
        for i in range(meters)
    ]


class GatewaySource:
    """A gateway's local measurement topic; invalid payloads are logged and counted."""

    def __init__(
        self, connection: MqttConnection, topic_filter: str, *, max_buffer: int = 100_000
    ) -> None:
        self._conn = connection
        self._filter = topic_filter
        self._queue: queue.Queue[Reading] = queue.Queue(max_buffer)
        self.invalid = 0
        connection.client.on_connect = self._on_connect
        connection.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, *_args: Any) -> None:
        client.subscribe(self._filter, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            m = Measurement.model_validate_json(msg.payload)
        except ValueError as exc:
            self.invalid += 1
            log.warning(
                "invalid gateway measurement on %s: %s", msg.topic, str(exc).splitlines()[0]
            )
            return
        # Blocking put: a full buffer slows the broker session down instead of losing readings.
        self._queue.put((m.asset_id, m.timestamp.timestamp(), m.power_w, m.energy_wh))

    def start(self) -> None:
        self._conn.start()

    def stop(self) -> None:
        self._conn.stop()

    def batches(self, stop: threading.Event, max_batch: int = 500) -> Iterator[list[Reading]]:
        while not stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            yield batch
