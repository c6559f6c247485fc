"""Which charging events a data-API request asks for (seed 000), as one validated query.

Pure: request bodies and the subscription's own filter in, an :class:`EventQuery` out, or a
:class:`QueryError` naming the offending parameter. Both the on-demand endpoint and the batch
export run the same query, so they return the same events for the same filter.

Only completed events are returned (seed 000: ChargeEndTime is not nullable); a session still
charging is delivered live by the streamer and appears here once it has ended. Dates are checked
against the data availability of seed 000, the last 13 months: a bound before the first day of
that window or after today is refused, an end before its start too. Absent bounds take the
seed's defaults, limited to that window.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from psycopg import sql

from schemas.itron import (
    CSV_COLUMNS,
    TIME_COLUMNS,
    BatchTokens,
    ChargingEventRecord,
    EntityType,
    OnDemandRequest,
)
from schemas.timefmt import format_utc, parse_utc

AVAILABILITY_MONTHS = 13
PAGE_SIZE = 1000
DEFAULT_START = datetime(2020, 1, 1, tzinfo=UTC)
DEFAULT_END = datetime(9999, 12, 31, tzinfo=UTC)

COLUMN: dict[str, str] = {
    info.alias or name: name for name, info in ChargingEventRecord.model_fields.items()
}
"""Seed-000 field -> charging_events column (the record's field names are the columns)."""

RECORD_FIELDS: tuple[str, ...] = tuple(COLUMN)
"""Seed 000's on-demand field order."""

ENTITY_COLUMN: dict[EntityType, str] = {
    EntityType.SERVICE_POINT: "service_point_id",
    EntityType.METER: "meter_id",
    EntityType.ESN: "esn",
    EntityType.TRANSFORMER: "transformer_id",
    EntityType.PREMISES: "premise_id",
}

TOKEN_COLUMN: dict[str, str] = {
    "device": "asset_id",
    "esn": "esn",
    "meter": "meter_id",
    "meter_number": "meter_number",
    "service_point": "service_point_id",
    "premises": "premise_id",
    "transformer": "transformer_id",
    "feeder": "feeder_id",
}
"""Batch token -> column. ``Device`` is the metering device the edge agent reported as."""


class QueryError(ValueError):
    """A request that cannot be run as asked, and the parameter that is wrong."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


@dataclass(frozen=True, slots=True)
class Availability:
    """The window of seed 000's 'last 13 months', whole UTC days."""

    earliest: datetime
    latest: datetime

    @classmethod
    def at(cls, now: datetime) -> Availability:
        today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        month = today.year * 12 + today.month - 1 - AVAILABILITY_MONTHS
        year, month0 = divmod(month, 12)
        day = today.day
        while True:  # 31 March - 13 months = the last day of February
            try:
                earliest = today.replace(year=year, month=month0 + 1, day=day)
                break
            except ValueError:
                day -= 1
        return cls(earliest, today + timedelta(days=1))


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Completed charging events with ChargeStartTime in [event_from, event_to] and
    ReceivedTime in [received_from, received_to], whose columns match every condition."""

    event_from: datetime
    event_to: datetime
    received_from: datetime | None = None
    received_to: datetime | None = None
    conditions: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    def where(self) -> tuple[sql.Composed, dict[str, Any]]:
        parts: list[sql.Composable] = [
            sql.SQL("charge_end_time IS NOT NULL"),
            sql.SQL("charge_start_time >= %(event_from)s"),
            sql.SQL("charge_start_time <= %(event_to)s"),
        ]
        params: dict[str, Any] = {"event_from": self.event_from, "event_to": self.event_to}
        if self.received_from is not None:
            parts.append(sql.SQL("received_time >= %(received_from)s"))
            params["received_from"] = self.received_from
        if self.received_to is not None:
            parts.append(sql.SQL("received_time <= %(received_to)s"))
            params["received_to"] = self.received_to
        for i, (column, values) in enumerate(self.conditions):
            parts.append(sql.SQL("{} = ANY({})").format(sql.Identifier(column),
                                                        sql.Placeholder(f"c{i}")))  # fmt: skip
            params[f"c{i}"] = list(values)
        return sql.SQL(" AND ").join(parts), params

    def to_json(self) -> dict[str, Any]:
        return {
            "event_from": format_utc(self.event_from),
            "event_to": format_utc(self.event_to),
            "received_from": _opt_format(self.received_from),
            "received_to": _opt_format(self.received_to),
            "conditions": [[column, list(values)] for column, values in self.conditions],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EventQuery:
        return cls(
            event_from=parse_utc(data["event_from"]),
            event_to=parse_utc(data["event_to"]),
            received_from=_opt_parse(data["received_from"]),
            received_to=_opt_parse(data["received_to"]),
            conditions=tuple((column, tuple(values)) for column, values in data["conditions"]),
        )

    def digest(self) -> str:
        """Identifies the query, so a page token cannot be replayed against another one."""
        return hashlib.sha256(orjson.dumps(self.to_json())).hexdigest()[:16]


def _opt_format(value: datetime | None) -> str | None:
    return None if value is None else format_utc(value)


def _opt_parse(value: str | None) -> datetime | None:
    return None if value is None else parse_utc(value)


def _checked_range(
    start: tuple[str, datetime | None],
    end: tuple[str, datetime | None],
    window: Availability,
) -> tuple[datetime | None, datetime | None]:
    for name, value in (start, end):
        if value is not None and not window.earliest <= value <= window.latest:
            raise QueryError(
                name,
                f"{format_utc(value)} is outside the data available, "
                f"{format_utc(window.earliest)} to {format_utc(window.latest)} (13 months)",
            )
    if start[1] is not None and end[1] is not None and end[1] < start[1]:
        raise QueryError(end[0], f"is before {start[0]}")
    return start[1], end[1]


def _query(
    names: tuple[str, str, str, str],
    bounds: tuple[datetime | None, datetime | None, datetime | None, datetime | None],
    conditions: Sequence[tuple[str, tuple[str, ...]]],
    now: datetime,
) -> EventQuery:
    window = Availability.at(now)
    event_from, event_to = _checked_range((names[0], bounds[0]), (names[1], bounds[1]), window)
    received_from, received_to = _checked_range(
        (names[2], bounds[2]), (names[3], bounds[3]), window
    )
    return EventQuery(
        event_from=max(event_from or DEFAULT_START, window.earliest),
        event_to=event_to or DEFAULT_END,
        received_from=received_from,
        received_to=received_to,
        conditions=tuple(conditions),
    )


def subscription_condition(
    entity_type: EntityType, entity_ids: Sequence[str]
) -> list[tuple[str, tuple[str, ...]]]:
    """The subscription's own filter, which every query of it keeps."""
    if entity_type is EntityType.NONE:
        return []
    return [(ENTITY_COLUMN[entity_type], tuple(entity_ids))]


def on_demand_query(
    request: OnDemandRequest,
    subscription: list[tuple[str, tuple[str, ...]]],
    *,
    now: datetime,
) -> EventQuery:
    conditions = list(subscription)
    if request.entity_type is EntityType.NONE:
        if request.entity_ids:
            raise QueryError("EntityId", "EntityType None matches every event and takes no id")
    elif not request.entity_ids:
        raise QueryError("EntityId", f"EntityType {request.entity_type.value} needs an id")
    else:
        conditions.append((ENTITY_COLUMN[request.entity_type], tuple(request.entity_ids)))
    return _query(
        ("StartEventDate", "EndEventDate", "StartReceivedDatetime", "EndReceivedDatetime"),
        (
            request.start_event_date,
            request.end_event_date,
            request.start_received,
            request.end_received,
        ),
        conditions,
        now,
    )


def batch_query(
    tokens: BatchTokens,
    subscription: list[tuple[str, tuple[str, ...]]],
    *,
    now: datetime,
) -> EventQuery:
    conditions = list(subscription)
    for name, column in TOKEN_COLUMN.items():
        value = getattr(tokens, name)
        if value is None:
            continue
        ids = tuple(part.strip() for part in value.split(",") if part.strip())
        if not ids:
            alias = BatchTokens.model_fields[name].alias or name
            raise QueryError(alias, "names no id (a comma-separated list of ids, or empty)")
        conditions.append((column, ids))
    return _query(
        ("StartEventDate", "EndEventDate", "StartReceivedDateTime", "EndReceivedDateTime"),
        (
            tokens.start_event_date,
            tokens.end_event_date,
            tokens.start_received,
            tokens.end_received,
        ),
        conditions,
        now,
    )


@dataclass(frozen=True, slots=True)
class PagePosition:
    """The last event of a page: on-demand pages are newest first, by ChargeStartTime, then
    transactionId."""

    charge_start_time: datetime
    transaction_id: str

    def token(self, query: EventQuery) -> str:
        raw = orjson.dumps(
            {
                "s": format_utc(self.charge_start_time),
                "t": self.transaction_id,
                "q": query.digest(),
            }
        )
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def from_token(cls, token: str, query: EventQuery) -> PagePosition:
        try:
            data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            position = cls(parse_utc(data["s"]), str(data["t"]))
            same_query = data["q"] == query.digest()
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise QueryError("PageToken", "is not a token this API issued") from None
        if not same_query:
            raise QueryError("PageToken", "belongs to a request with other filters or dates")
        return position


def page_sql(
    query: EventQuery, after: PagePosition | None, limit: int
) -> tuple[sql.Composed, dict[str, Any]]:
    """One page, newest first: each event as seed-000 JSON text (built by PostgreSQL), with its
    ChargeStartTime and transaction id for the next page's token."""
    where, params = query.where()
    if after is not None:
        # Spelled out rather than as a row comparison so the (entity, start time) indexes apply.
        where = sql.SQL(
            "{} AND charge_start_time <= %(after_start)s AND (charge_start_time < %(after_start)s"
            " OR transaction_id < %(after_id)s)"
        ).format(where)
        params |= {"after_start": after.charge_start_time, "after_id": after.transaction_id}
    statement = sql.SQL(
        "SELECT {}, charge_start_time, transaction_id FROM charging_events WHERE {}"
        " ORDER BY charge_start_time DESC, transaction_id DESC LIMIT {}"
    ).format(_json_object(RECORD_FIELDS), where, sql.Literal(limit))
    return statement, params


def _utc_text(column: str) -> sql.Composed:
    """A timestamp as ISO 8601 UTC with ``Z``, as ``format_utc`` writes it (no zero fraction)."""
    return sql.SQL(
        "replace(to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
        " '.000000Z', 'Z')"
    ).format(sql.Identifier(column))


def _export_value(name: str) -> sql.Composable:
    column = COLUMN[name]
    if name in TIME_COLUMNS:
        return _utc_text(column)
    return sql.Identifier(column)


def _json_object(fields: Sequence[str]) -> sql.Composed:
    pairs = [sql.SQL("{}, {}").format(sql.Literal(name), _export_value(name)) for name in fields]
    return sql.SQL("json_build_object({})::text").format(sql.SQL(", ").join(pairs))


def export_copy_sql(query: EventQuery, *, limit: int) -> tuple[sql.Composed, dict[str, Any]]:
    """``COPY ... TO STDOUT`` (CSV with seed 000's header) of every matching event, at most
    ``limit``, oldest first. PostgreSQL formats the rows itself, so an export streams at the
    speed of COPY."""
    where, params = query.where()
    select = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(_export_value(name), sql.Identifier(name))
        for name in CSV_COLUMNS
    )
    options = sql.SQL("FORMAT csv, HEADER")
    select_sql = sql.SQL(
        "SELECT {} FROM charging_events WHERE {} ORDER BY charge_start_time, transaction_id"
        " LIMIT {}"
    ).format(select, where, sql.Literal(limit))
    return sql.SQL("COPY ({}) TO STDOUT ({})").format(select_sql, options), params
