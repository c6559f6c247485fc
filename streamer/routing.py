"""Routing: outbox rows x subscriptions -> MQTT publications (pure, no I/O).

Each row is one seed-001 event (a start or an end) with its identity fields as of the event
date, so a filter on e.g. TransformerID matches the transformer the meter had then. Rows keep
their outbox order within each subscription topic, which keeps them in order per meter; a
subscription's events are packed into payloads of at most ``max_events``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.itron import EntityType, StreamEvent, StreamKind
from schemas.subscriptions import SubscriptionState
from schemas.topics import DEFAULT_PREFIX, subscription_topic

STREAM_FIELDS: tuple[str, ...] = tuple(
    info.alias or name for name, info in StreamEvent.model_fields.items()
)
"""Seed 001's field names in the seed's order."""

ENTITY_FIELD: dict[EntityType, str] = {
    EntityType.SERVICE_POINT: "ServicePointID",
    EntityType.METER: "MeterID",
    EntityType.ESN: "ESN",
    EntityType.TRANSFORMER: "TransformerID",
    EntityType.PREMISES: "PremiseID",
}
"""The seed-001 field each filter type looks at."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    position: int
    transaction_id: str
    kind: StreamKind
    event: dict[str, Any]
    """The seed-001 event under its wire names, as the ingestor stored it."""

    @property
    def event_id(self) -> str:
        """Stable across redeliveries: what a subscriber de-duplicates on."""
        return f"{self.transaction_id}:{self.kind.value}"


@dataclass(frozen=True, slots=True)
class Subscription:
    subscription_id: str
    entity_type: EntityType
    entity_ids: frozenset[str]
    start_after: int
    state: SubscriptionState = SubscriptionState.ACTIVE


@dataclass(frozen=True, slots=True)
class Publication:
    subscription_id: str
    topic: str
    rows: tuple[OutboxRow, ...]

    def payload(self) -> bytes:
        events = [{name: row.event.get(name) for name in STREAM_FIELDS} for row in self.rows]
        return orjson.dumps({"EVChargingEvents": events})

    def user_properties(self) -> list[tuple[str, str]]:
        """One ``event-id`` and one ``kind`` per event, in payload order (MQTT 5 allows
        repeated user property names)."""
        props: list[tuple[str, str]] = []
        for row in self.rows:
            props.append(("event-id", row.event_id))
            props.append(("kind", row.kind.value))
        return props


@dataclass(frozen=True, slots=True)
class Routing:
    publications: list[Publication]
    deliveries: int = 0
    """Events published, counted once per matching active subscription."""
    paused: int = 0
    """Events an otherwise matching paused subscription did not get."""
    unmatched: int = 0
    """Rows no subscription wanted."""


def route(
    rows: Sequence[OutboxRow],
    subscriptions: Iterable[Subscription],
    *,
    prefix: str = DEFAULT_PREFIX,
    max_events: int = 100,
) -> Routing:
    """Which topics get which rows, in outbox order, packed ``max_events`` to a payload."""
    if max_events < 1:
        raise ValueError("max_events must be at least 1")
    everything: list[Subscription] = []
    by_entity: dict[tuple[str, str], list[Subscription]] = defaultdict(list)
    for sub in subscriptions:
        if sub.entity_type is EntityType.NONE:
            everything.append(sub)
        for entity_id in sub.entity_ids:
            by_entity[ENTITY_FIELD[sub.entity_type], entity_id].append(sub)
    fields = {name for name, _ in by_entity}

    matched: dict[str, list[OutboxRow]] = defaultdict(list)
    paused = unmatched = 0
    for row in sorted(rows, key=lambda row: row.position):
        candidates = list(everything)
        for name in fields:
            candidates.extend(by_entity.get((name, row.event.get(name) or ""), ()))
        hits = {sub.subscription_id: sub for sub in candidates if row.position > sub.start_after}
        unmatched += not hits
        for sub in hits.values():
            if sub.state is SubscriptionState.PAUSED:
                paused += 1
            else:
                matched[sub.subscription_id].append(row)

    publications = [
        Publication(sub_id, subscription_topic(sub_id, prefix=prefix), tuple(chunk))
        for sub_id, hits in matched.items()
        for chunk in (hits[i : i + max_events] for i in range(0, len(hits), max_events))
    ]
    publications.sort(key=lambda pub: pub.rows[0].position)
    return Routing(
        publications=publications,
        deliveries=sum(len(hits) for hits in matched.values()),
        paused=paused,
        unmatched=unmatched,
    )
