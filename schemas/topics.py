"""The MQTT topic tree of DESIGN.md, built and parsed in one place.

Edge:        ``{prefix}/{siteId}/{assetId}/{kind}``, kind one of :class:`EdgeKind`
Subscribers: ``{prefix}/subscriptions/{subscriptionId}/events``
Control:     ``{prefix}/control/{DataSubscriberId}/actions`` (power-limit status events)

``prefix`` defaults to ``ev/v1`` (the version is part of the tree).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_PREFIX = "ev/v1"
SUBSCRIPTIONS = "subscriptions"
CONTROL = "control"
_LEVEL = re.compile(r"^[^/#+\s]{1,128}$")


class TopicError(ValueError):
    """A topic or topic level that is not part of the tree."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"topic {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason


class EdgeKind(StrEnum):
    MEASUREMENT = "measurement"
    TRANSACTION = "transaction"
    STATUS = "status"
    COMMAND = "command"
    COMMAND_RESULT = "command-result"


@dataclass(frozen=True, slots=True)
class EdgeTopic:
    site_id: str
    asset_id: str
    kind: EdgeKind


def _check_level(topic: str, name: str, value: str) -> None:
    if not _LEVEL.match(value):
        raise TopicError(topic, f"{name} {value!r} must be 1-128 chars without / # + or spaces")


def _check_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if not prefix or any(not _LEVEL.match(level) for level in prefix.split("/")):
        raise TopicError(prefix, "prefix levels must be non-empty and free of wildcards")
    return prefix


RESERVED_SITES = frozenset({SUBSCRIPTIONS, CONTROL, "ingestor", "streamer"})
RESERVED_SITE_PREFIX = "sub-"
"""The broker ACL lets a gateway write its own site's topics, its user name being its siteId;
service and subscriber user names (``sub-<DataSubscriberId>``) must never be sites too."""


def _check_site(topic: str, site_id: str) -> None:
    _check_level(topic, "siteId", site_id)
    if site_id in RESERVED_SITES or site_id.startswith(RESERVED_SITE_PREFIX):
        raise TopicError(topic, f"siteId {site_id!r} is reserved (a service or subscriber name)")


def edge_topic(site_id: str, asset_id: str, kind: EdgeKind, *, prefix: str = DEFAULT_PREFIX) -> str:
    prefix = _check_prefix(prefix)
    topic = f"{prefix}/{site_id}/{asset_id}/{kind.value}"
    _check_site(topic, site_id)
    _check_level(topic, "assetId", asset_id)
    return topic


def edge_filter(kind: EdgeKind | None = None, *, prefix: str = DEFAULT_PREFIX) -> str:
    """Wildcard filter for all sites' messages of ``kind`` (all kinds when None)."""
    prefix = _check_prefix(prefix)
    return f"{prefix}/+/+/{kind.value}" if kind else f"{prefix}/+/+/+"


def site_filter(site_id: str, kind: EdgeKind, *, prefix: str = DEFAULT_PREFIX) -> str:
    """Wildcard filter for one site's messages of ``kind`` (every asset)."""
    prefix = _check_prefix(prefix)
    topic = f"{prefix}/{site_id}/+/{kind.value}"
    _check_site(topic, site_id)
    return topic


def parse_edge_topic(topic: str, *, prefix: str = DEFAULT_PREFIX) -> EdgeTopic:
    prefix = _check_prefix(prefix)
    if not topic.startswith(prefix + "/"):
        raise TopicError(topic, f"does not start with {prefix}/")
    levels = topic[len(prefix) + 1 :].split("/")
    if len(levels) != 3:
        raise TopicError(topic, "expected {siteId}/{assetId}/{kind}")
    site_id, asset_id, kind = levels
    if site_id == SUBSCRIPTIONS:
        raise TopicError(topic, "is a subscription topic, not an edge topic")
    _check_site(topic, site_id)
    _check_level(topic, "assetId", asset_id)
    try:
        edge_kind = EdgeKind(kind)
    except ValueError:
        raise TopicError(topic, f"unknown kind {kind!r}") from None
    return EdgeTopic(site_id, asset_id, edge_kind)


def subscription_topic(subscription_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    prefix = _check_prefix(prefix)
    topic = f"{prefix}/{SUBSCRIPTIONS}/{subscription_id}/events"
    _check_level(topic, "subscriptionId", subscription_id)
    return topic


def parse_subscription_topic(topic: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    """Return the subscription id of a subscriber topic."""
    prefix = _check_prefix(prefix)
    head = f"{prefix}/{SUBSCRIPTIONS}/"
    if not topic.startswith(head) or not topic.endswith("/events"):
        raise TopicError(topic, f"expected {head}{{subscriptionId}}/events")
    subscription_id = topic[len(head) : -len("/events")]
    _check_level(topic, "subscriptionId", subscription_id)
    return subscription_id


def control_topic(subscriber_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    """Where a data subscriber's power-limit actions report their status events."""
    prefix = _check_prefix(prefix)
    topic = f"{prefix}/{CONTROL}/{subscriber_id}/actions"
    _check_level(topic, "DataSubscriberId", subscriber_id)
    return topic
