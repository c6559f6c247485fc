"""The pure routing of outbox rows to subscription topics."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from schemas.itron import EntityType, StreamKind, StreamPayload
from schemas.subscriptions import SubscriptionState
from streamer.routing import ENTITY_FIELD, STREAM_FIELDS, OutboxRow, Subscription, route


def row(
    position: int, meter: str = "m1", kind: StreamKind = StreamKind.START, **ids: str
) -> OutboxRow:
    event: dict[str, object] = {
        "ServicePointID": ids.get("sp", f"sp-{meter}"),
        "MeterID": meter,
        "MeterNumber": None,
        "ESN": ids.get("esn", f"esn-{meter}"),
        "TransformerID": ids.get("tx", "tx-1"),
        "PremiseID": ids.get("premise", f"p-{meter}"),
        "ReceivedTime": "2026-05-04T18:00:05Z",
    }
    if kind is StreamKind.START:
        event |= {"ChargeStartTime": "2026-05-04T18:00:00Z", "ChargeW": 7200.0}
        event |= {"ChargeEndTime": None, "ChargeDuration": None, "ChargeEnergy": None}
    else:
        event |= {"ChargeStartTime": None, "ChargeW": None, "ChargeEndTime": "2026-05-04T20:00:00Z"}
        event |= {"ChargeDuration": 2.0, "ChargeEnergy": 14400.0}
    return OutboxRow(position, f"tx-{meter}-{position}", kind, event)


def sub(
    sub_id: str,
    entity_type: EntityType = EntityType.NONE,
    *ids: str,
    start_after: int = 0,
    state: SubscriptionState = SubscriptionState.ACTIVE,
) -> Subscription:
    return Subscription(sub_id, entity_type, frozenset(ids), start_after, state)


def delivered(routing_result: object, sub_id: str) -> list[int]:
    pubs = routing_result.publications  # type: ignore[attr-defined]
    return [r.position for p in pubs if p.subscription_id == sub_id for r in p.rows]


def test_every_entity_type_selects_by_its_own_field() -> None:
    rows = [
        row(1, "m1", sp="SP1", esn="E1", tx="T1", premise="P1"),
        row(2, "m2", sp="SP2", esn="E2", tx="T1", premise="P2"),
        row(3, "m3", sp="SP3", esn="E3", tx="T2", premise="P3"),
    ]
    subs = [
        sub("all"),
        sub("by-sp", EntityType.SERVICE_POINT, "SP2"),
        sub("by-meter", EntityType.METER, "m3", "m1"),
        sub("by-esn", EntityType.ESN, "E1"),
        sub("by-tx", EntityType.TRANSFORMER, "T1"),
        sub("by-premise", EntityType.PREMISES, "P3"),
        sub("nobody", EntityType.TRANSFORMER, "T9"),
    ]
    result = route(rows, subs)
    assert delivered(result, "all") == [1, 2, 3]
    assert delivered(result, "by-sp") == [2]
    assert delivered(result, "by-meter") == [1, 3]
    assert delivered(result, "by-esn") == [1]
    assert delivered(result, "by-tx") == [1, 2]
    assert delivered(result, "by-premise") == [3]
    assert delivered(result, "nobody") == []
    assert result.deliveries == 3 + 1 + 2 + 1 + 2 + 1
    assert result.unmatched == 0
    assert {p.topic for p in result.publications if p.subscription_id == "by-tx"} == {
        "ev/v1/subscriptions/by-tx/events"
    }


def test_an_id_absent_from_the_event_matches_nothing() -> None:
    orphan = row(1, "m1")
    orphan.event["TransformerID"] = None
    result = route([orphan], [sub("tx", EntityType.TRANSFORMER, "tx-1")])
    assert result.publications == []
    assert result.unmatched == 1


def test_a_subscription_gets_only_rows_after_its_start_position() -> None:
    rows = [row(n) for n in range(1, 6)]
    assert delivered(route(rows, [sub("s", start_after=3)]), "s") == [4, 5]


def test_paused_subscriptions_get_nothing_and_are_counted() -> None:
    result = route([row(1), row(2)], [sub("p", state=SubscriptionState.PAUSED)])
    assert result.publications == []
    assert result.paused == 2
    assert result.deliveries == 0


def test_start_and_end_payloads_are_seed_001_field_for_field() -> None:
    result = route([row(2, kind=StreamKind.END), row(1)], [sub("s")])
    (publication,) = result.publications
    body = orjson.loads(publication.payload())
    assert list(body) == ["EVChargingEvents"]
    start, end = body["EVChargingEvents"]
    assert list(start) == list(STREAM_FIELDS)
    assert STREAM_FIELDS == (
        "ServicePointID", "MeterID", "MeterNumber", "ESN", "TransformerID", "PremiseID",
        "ReceivedTime", "ChargeStartTime", "ChargeEndTime", "ChargeW", "ChargeDuration",
        "ChargeEnergy",
    )  # fmt: skip
    assert start["ChargeStartTime"]
    assert start["ChargeW"] == 7200.0
    assert start["ChargeEndTime"] is start["ChargeDuration"] is start["ChargeEnergy"] is None
    assert end["ChargeW"] is end["ChargeStartTime"] is None
    assert (end["ChargeDuration"], end["ChargeEnergy"]) == (2.0, 14400.0)
    StreamPayload.model_validate(body)
    assert publication.user_properties() == [
        ("event-id", "tx-m1-1:start"),
        ("kind", "start"),
        ("event-id", "tx-m1-2:end"),
        ("kind", "end"),
    ]


def test_a_filter_listing_an_id_twice_delivers_once() -> None:
    result = route([row(1)], [Subscription("s", EntityType.METER, frozenset({"m1"}), 0)])
    assert delivered(result, "s") == [1]


@given(
    meters=st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=60),
    wanted=st.sets(st.sampled_from(["a", "b", "c", "d", "z"]), min_size=1),
    max_events=st.integers(min_value=1, max_value=7),
    start_after=st.integers(min_value=0, max_value=30),
    shuffle=st.randoms(use_true_random=False),
)
def test_batches_are_bounded_and_keep_outbox_order_per_topic(
    meters: list[str], wanted: set[str], max_events: int, start_after: int, shuffle: object
) -> None:
    rows = [row(n, meter) for n, meter in enumerate(meters, start=1)]
    shuffled = list(rows)
    shuffle.shuffle(shuffled)  # type: ignore[attr-defined]
    result = route(
        shuffled,
        [sub("m", EntityType.METER, *wanted, start_after=start_after), sub("all")],
        max_events=max_events,
    )
    expected = [
        r.position for r in rows if r.event["MeterID"] in wanted and r.position > start_after
    ]
    assert delivered(result, "m") == expected
    assert delivered(result, "all") == [r.position for r in rows]
    assert all(1 <= len(p.rows) <= max_events for p in result.publications)
    assert result.unmatched == 0


def test_entity_field_covers_every_filter_type() -> None:
    assert set(ENTITY_FIELD) == set(EntityType) - {EntityType.NONE}
    assert set(ENTITY_FIELD.values()) <= set(STREAM_FIELDS)
