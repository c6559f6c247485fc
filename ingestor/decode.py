"""Turn one MQTT message (topic + raw bytes) into a validated wire model or a rejection.

Pure: no I/O. Every way a message can be bad yields a :class:`Rejected` with a reason an
operator can act on; the raw bytes travel with it to the dead-letter table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache

from pydantic import ValidationError

from schemas.pleevi import Measurement, Transaction
from schemas.topics import EdgeKind, EdgeTopic, TopicError, parse_edge_topic


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Decoded:
    received: Received
    site_id: str
    message: Measurement | Transaction


class RejectReason(StrEnum):
    """Small fixed set, used as a metric label; the full reason is text beside it."""

    OVERSIZED = "oversized"
    TOPIC = "topic"
    JSON = "json"
    SCHEMA = "schema"
    ASSET_MISMATCH = "asset_mismatch"
    DATABASE = "database"


@dataclass(frozen=True, slots=True)
class Rejected:
    received: Received
    category: RejectReason
    reason: str


_MODELS: dict[EdgeKind, type[Measurement] | type[Transaction]] = {
    EdgeKind.MEASUREMENT: Measurement,
    EdgeKind.TRANSACTION: Transaction,
}


def summarize(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "message"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


@lru_cache(maxsize=65_536)
def _parse_topic(topic: str, prefix: str) -> EdgeTopic:
    """Topics repeat for every reading of a meter: parse each one once."""
    return parse_edge_topic(topic, prefix=prefix)


def decode(received: Received, *, prefix: str, max_bytes: int) -> Decoded | Rejected:
    size = len(received.payload)
    if size > max_bytes:
        return Rejected(
            received,
            RejectReason.OVERSIZED,
            f"payload of {size} bytes exceeds the {max_bytes}-byte limit",
        )
    try:
        topic = _parse_topic(received.topic, prefix)
    except TopicError as exc:
        return Rejected(received, RejectReason.TOPIC, f"unknown topic: {exc.reason}")
    model = _MODELS.get(topic.kind)
    if model is None:
        return Rejected(
            received, RejectReason.TOPIC, f"messages of kind {topic.kind.value!r} are not ingested"
        )
    try:
        message = model.model_validate_json(received.payload)
    except ValidationError as exc:
        kinds = {error["type"] for error in exc.errors()}
        if "json_invalid" in kinds:
            return Rejected(received, RejectReason.JSON, f"invalid JSON: {summarize(exc)}")
        if "model_type" in kinds:
            return Rejected(
                received, RejectReason.JSON, f"invalid {topic.kind.value}: expected a JSON object"
            )
        return Rejected(
            received, RejectReason.SCHEMA, f"invalid {topic.kind.value}: {summarize(exc)}"
        )
    if message.asset_id != topic.asset_id:
        return Rejected(
            received,
            RejectReason.ASSET_MISMATCH,
            f"assetId {message.asset_id!r} does not match the topic's asset {topic.asset_id!r}",
        )
    return Decoded(received, topic.site_id, message)
