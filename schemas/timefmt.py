"""Strict time handling shared by every wire model.

Timestamps on the wire must carry a UTC offset; a naive one is an error, never a guess.
Everything is normalised to UTC and written back as ISO 8601 with a ``Z`` suffix.
Query parameters of seed 000 may also be a bare date (``2025-12-03`` = that day 00:00 UTC).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, PlainSerializer

_DATE_ONLY = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$")


def to_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; refuse naive datetimes."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp has no UTC offset; send e.g. 2024-05-28T10:52:00+00:00")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp is out of range once converted to UTC") from None


def format_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix, the form every output of the system uses."""
    return to_utc(value).isoformat().replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    """Parse an ISO 8601 timestamp that must carry an offset."""
    return to_utc(datetime.fromisoformat(text))


def _date_only_to_midnight(value: Any) -> Any:
    if isinstance(value, str) and _DATE_ONLY.match(value.strip()):
        year, month, day = (int(part) for part in value.strip().split("-"))
        return datetime(year, month, day, tzinfo=UTC)
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


_serialize_utc = PlainSerializer(format_utc, return_type=str, when_used="json")

UtcDatetime = Annotated[AwareDatetime, AfterValidator(to_utc), _serialize_utc]
"""A timezone-aware timestamp, normalised to UTC, serialised with ``Z``."""

QueryInstant = Annotated[
    AwareDatetime,
    BeforeValidator(_date_only_to_midnight),
    AfterValidator(to_utc),
    _serialize_utc,
]
"""A query bound: aware ISO 8601, or a bare date meaning that day 00:00 UTC."""
