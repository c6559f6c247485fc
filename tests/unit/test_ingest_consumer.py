"""The consumer deals messages into writer lanes by topic: one topic, one lane, in order."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from ingestor.consumer import Consumer
from ingestor.metrics import IngestMetrics
from runtime.mqtt import MqttSettings
from runtime.mqtt_subscriber import Inbound


def test_messages_of_one_topic_stay_in_one_lane_in_order() -> None:
    consumer = Consumer(
        mqtt=MqttSettings(),
        client_id="unit",
        session_expiry_s=0,
        writer=Any,  # type: ignore[arg-type]  # nothing is written here
        metrics=IngestMetrics(CollectorRegistry()),
        share_group="g",
        batch_size=1000,
        batch_delay_s=0.01,
        max_inflight=1000,
        writers=4,
    )
    topics = [f"ev/v1/s/m-{i}/transaction" for i in range(40)]
    consumer._on_messages([Inbound(topics[i % 40], b"", 1, i + 1, 1, 0.0) for i in range(400)])
    lanes_of_topic: dict[str, set[int]] = {}
    for number, lane in enumerate(consumer.lanes):
        batch = consumer._take_batch(lane)
        for m in batch:
            lanes_of_topic.setdefault(m.topic, set()).add(number)
        by_topic: dict[str, list[int]] = {}
        for m in batch:
            by_topic.setdefault(m.topic, []).append(m.packet_id)
        assert all(ids == sorted(ids) for ids in by_topic.values())
    assert all(len(lanes) == 1 for lanes in lanes_of_topic.values())
    assert len(lanes_of_topic) == 40
    assert sum(1 for lane in consumer.lanes if lane.queue) == 0
    assert len({n for lanes in lanes_of_topic.values() for n in lanes}) > 1  # the work is split
