"""The pure data-API query: the 13-month window, defaults, filters and page tokens."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.itron import BatchTokens, EntityType, OnDemandRequest
from streamer.eventquery import (
    DEFAULT_END,
    Availability,
    EventQuery,
    PagePosition,
    QueryError,
    batch_query,
    on_demand_query,
    subscription_condition,
)

NOW = datetime(2026, 11, 21, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "earliest", "latest"),
    [
        (NOW, datetime(2025, 10, 21, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC)),
        (datetime(2026, 3, 31, 1, tzinfo=UTC), datetime(2025, 2, 28, tzinfo=UTC),
         datetime(2026, 4, 1, tzinfo=UTC)),
        (datetime(2025, 3, 31, 1, tzinfo=UTC), datetime(2024, 2, 29, tzinfo=UTC),
         datetime(2025, 4, 1, tzinfo=UTC)),
        (datetime(2026, 1, 5, tzinfo=UTC), datetime(2024, 12, 5, tzinfo=UTC),
         datetime(2026, 1, 6, tzinfo=UTC)),
    ],
)  # fmt: skip
def test_availability_is_13_months_of_whole_days(
    now: datetime, earliest: datetime, latest: datetime
) -> None:
    assert Availability.at(now) == Availability(earliest, latest)


def test_absent_bounds_take_the_seed_defaults_within_the_window() -> None:
    query = on_demand_query(OnDemandRequest(), [], now=NOW)
    assert query == EventQuery(datetime(2025, 10, 21, tzinfo=UTC), DEFAULT_END)


def test_filters_combine_with_the_subscription() -> None:
    own = subscription_condition(EntityType.TRANSFORMER, ["XF-1"])
    query = on_demand_query(
        OnDemandRequest(EntityType="meter", EntityId="M-1", StartReceivedDatetime="2026-01-02"),
        own,
        now=NOW,
    )
    assert query.conditions == (("transformer_id", ("XF-1",)), ("meter_id", ("M-1",)))
    assert query.received_from == datetime(2026, 1, 2, tzinfo=UTC)
    _, params = query.where()
    assert params["c0"] == ["XF-1"]
    assert params["c1"] == ["M-1"]


def test_batch_tokens_take_comma_separated_ids_and_ignore_empty_ones() -> None:
    tokens = BatchTokens(Meter=" M-1, M-2 ,", Feeder="", Device="dev-9")
    query = batch_query(tokens, [], now=NOW)
    assert query.conditions == (("asset_id", ("dev-9",)), ("meter_id", ("M-1", "M-2")))
    with pytest.raises(QueryError) as caught:
        batch_query(BatchTokens(Transformer=" , "), [], now=NOW)
    assert caught.value.parameter == "Transformer"


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"StartEventDate": "2025-10-20T23:59:59Z"}, "StartEventDate"),
        ({"EndReceivedDatetime": "2026-11-22T00:00:01Z"}, "EndReceivedDatetime"),
        ({"StartEventDate": "2026-02-02", "EndEventDate": "2026-02-01"}, "EndEventDate"),
        ({"EntityType": "ESN"}, "EntityId"),
    ],
)
def test_refusals_name_the_parameter(body: dict[str, str], parameter: str) -> None:
    with pytest.raises(QueryError) as caught:
        on_demand_query(OnDemandRequest.model_validate(body), [], now=NOW)
    assert caught.value.parameter == parameter


def test_a_page_token_round_trips_for_its_own_query_only() -> None:
    query = on_demand_query(OnDemandRequest(StartEventDate="2026-01-01"), [], now=NOW)
    position = PagePosition(datetime(2026, 5, 1, 10, 0, 0, 123456, tzinfo=UTC), "tx-1")
    assert PagePosition.from_token(position.token(query), query) == position
    other = on_demand_query(OnDemandRequest(StartEventDate="2026-01-02"), [], now=NOW)
    with pytest.raises(QueryError, match="other filters"):
        PagePosition.from_token(position.token(query), other)
    for garbage in ("", "abc", "e30", "!!!"):
        with pytest.raises(QueryError, match="not a token"):
            PagePosition.from_token(garbage, query)


def test_a_query_survives_its_json_form() -> None:
    query = batch_query(BatchTokens(Premises="P-1", EndReceivedDateTime="2026-03-01"), [],
                        now=NOW)  # fmt: skip
    assert EventQuery.from_json(query.to_json()) == query
