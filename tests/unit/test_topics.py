"""Topic tree: build and parse round-trip; anything outside the tree is refused."""

from __future__ import annotations

import pytest

from schemas.topics import (
    EdgeKind,
    TopicError,
    edge_filter,
    edge_topic,
    parse_edge_topic,
    parse_subscription_topic,
    subscription_topic,
)


@pytest.mark.parametrize("kind", list(EdgeKind))
def test_edge_topic_round_trip(kind):
    """Every edge kind builds and parses back to the same parts."""
    topic = edge_topic("site-1", "meter-9", kind)
    assert topic == f"ev/v1/site-1/meter-9/{kind.value}"
    parsed = parse_edge_topic(topic)
    assert (parsed.site_id, parsed.asset_id, parsed.kind) == ("site-1", "meter-9", kind)


def test_custom_prefix():
    """The prefix is configurable and must match on parse."""
    topic = edge_topic("s", "a", EdgeKind.MEASUREMENT, prefix="utility/ev/v1")
    assert parse_edge_topic(topic, prefix="utility/ev/v1").asset_id == "a"
    with pytest.raises(TopicError, match="does not start"):
        parse_edge_topic(topic)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("ev/v1/site/meter/voltage", "unknown kind"),
        ("ev/v1/site/measurement", "expected"),
        ("ev/v1/site/a/b/measurement", "expected"),
        ("ev/v2/site/meter/measurement", "does not start"),
        ("ev/v1/subscriptions/abc/events", "subscription topic"),
        ("ev/v1/si te/meter/measurement", "siteId"),
        ("ev/v1/sub-adms/meter/measurement", "reserved"),  # a subscriber's broker user
        ("ev/v1/ingestor/meter/transaction", "reserved"),  # a service's broker user
    ],
)
def test_bad_edge_topics(topic, reason):
    """Unknown kinds, wrong depth, wrong version and bad levels are refused with a reason."""
    with pytest.raises(TopicError, match=reason):
        parse_edge_topic(topic)


def test_reserved_site_ids_are_refused_when_building_too():
    """The broker ACL names a gateway's site by its user name: no site may be a service or
    subscriber user."""
    for site in ("sub-planner", "streamer", "subscriptions"):
        with pytest.raises(TopicError, match="reserved"):
            edge_topic(site, "m-1", EdgeKind.STATUS)


@pytest.mark.parametrize("bad", ["a/b", "+", "#", "", "x y"])
def test_levels_refuse_wildcards(bad):
    """Ids with wildcards, slashes or spaces never become topic levels."""
    with pytest.raises(TopicError):
        edge_topic("site", bad, EdgeKind.MEASUREMENT)


def test_subscription_topics():
    """Subscriber topics build and parse; the filter covers every site and asset."""
    topic = subscription_topic("sub-1")
    assert topic == "ev/v1/subscriptions/sub-1/events"
    assert parse_subscription_topic(topic) == "sub-1"
    assert edge_filter(EdgeKind.TRANSACTION) == "ev/v1/+/+/transaction"
    with pytest.raises(TopicError):
        parse_subscription_topic("ev/v1/subscriptions/a/b/events")
