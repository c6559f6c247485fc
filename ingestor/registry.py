"""The time-versioned meter registry: parse CIS/MDMS/GIS CSV exports (pure) and load them.

CSV columns (header names, case-insensitive; seed 000 spellings): ``MeterId`` (required),
``MeterNumber``, ``ElectronicSerialNumber`` (or ``ESN``), ``ServicePointId``, ``PremiseId``,
``TransformerId``, ``FeederId``, ``ValidFrom`` (required, ISO 8601 with offset or a date =
00:00 UTC), ``ValidTo`` (optional, exclusive). A row's key is ``(MeterId, ValidFrom)``; loading
the same file twice changes nothing. After a load, events of the loaded meters take the values
valid at their start (so an event of an unknown meter picks them up when they arrive).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import psycopg
from pydantic import TypeAdapter, ValidationError

from schemas.timefmt import QueryInstant

_INSTANT: TypeAdapter[datetime] = TypeAdapter(QueryInstant)

COLUMNS = {
    "meterid": "meter_id",
    "meternumber": "meter_number",
    "electronicserialnumber": "esn",
    "esn": "esn",
    "servicepointid": "service_point_id",
    "premiseid": "premise_id",
    "transformerid": "transformer_id",
    "feederid": "feeder_id",
    "validfrom": "valid_from",
    "validto": "valid_to",
}


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    meter_id: str
    valid_from: datetime
    valid_to: datetime | None = None
    meter_number: str | None = None
    esn: str | None = None
    service_point_id: str | None = None
    premise_id: str | None = None
    transformer_id: str | None = None
    feeder_id: str | None = None


ENTRY_FIELDS = tuple(f.name for f in fields(RegistryEntry))


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str


def _instant(value: str, name: str) -> datetime:
    try:
        return _INSTANT.validate_python(value)
    except ValidationError:
        raise ValueError(f"{name} {value!r} is not ISO 8601 with an offset or a date") from None


def parse_rows(lines: Iterable[str]) -> Iterator[RegistryEntry | RowError]:
    reader = csv.DictReader(lines)
    header = {name: COLUMNS.get(name.strip().lower()) for name in reader.fieldnames or []}
    missing = {"meter_id", "valid_from"} - set(header.values())
    if missing:
        yield RowError(1, f"header lacks {', '.join(sorted(missing))}")
        return
    for row in reader:
        values: dict[str, Any] = {}
        for name, text in row.items():
            column = header.get(name) if name is not None else None
            if column and text is not None and text.strip():
                values[column] = text.strip()
        try:
            if "meter_id" not in values or "valid_from" not in values:
                raise ValueError("MeterId and ValidFrom are required")
            values["valid_from"] = _instant(values["valid_from"], "ValidFrom")
            if "valid_to" in values:
                values["valid_to"] = _instant(values["valid_to"], "ValidTo")
                if values["valid_to"] <= values["valid_from"]:
                    raise ValueError("ValidTo is not after ValidFrom")
        except ValueError as exc:
            yield RowError(reader.line_num, str(exc))
            continue
        yield RegistryEntry(**values)


@dataclass(frozen=True, slots=True)
class LoadReport:
    added: int
    changed: int
    unchanged: int
    rejected: list[RowError]
    events_enriched: int


_UPSERT = f"""
INSERT INTO meter_registry ({", ".join(ENTRY_FIELDS)}, source)
VALUES ({", ".join(["%s"] * (len(ENTRY_FIELDS) + 1))})
ON CONFLICT (meter_id, valid_from) DO UPDATE SET
    {", ".join(f"{f} = EXCLUDED.{f}" for f in ENTRY_FIELDS[2:])},
    source = EXCLUDED.source, loaded_at = now()
WHERE ({", ".join(f"meter_registry.{f}" for f in ENTRY_FIELDS[2:])})
      IS DISTINCT FROM ({", ".join(f"EXCLUDED.{f}" for f in ENTRY_FIELDS[2:])})
RETURNING (xmax = 0) AS inserted
"""

ENRICH_SQL = """
UPDATE charging_events e SET
    registry_matched = r.meter_id IS NOT NULL,
    meter_id = r.meter_id, meter_number = r.meter_number, esn = r.esn,
    service_point_id = r.service_point_id, premise_id = r.premise_id,
    transformer_id = r.transformer_id, feeder_id = r.feeder_id,
    flags = CASE WHEN r.meter_id IS NULL
                 THEN array(SELECT DISTINCT unnest(e.flags || '{unknown_asset}'::text[]) ORDER BY 1)
                 ELSE array_remove(e.flags, 'unknown_asset') END,
    updated_at = now()
FROM charging_events e2
LEFT JOIN LATERAL (
    SELECT * FROM meter_registry m
    WHERE m.meter_id = e2.asset_id AND m.valid_from <= e2.charge_start_time
      AND (m.valid_to IS NULL OR m.valid_to > e2.charge_start_time)
    ORDER BY m.valid_from DESC LIMIT 1
) r ON true
WHERE e.transaction_id = e2.transaction_id AND e.charge_start_time = e2.charge_start_time
  AND e2.asset_id = ANY(%s)
"""


def lookup(conn: psycopg.Connection[Any], meter_id: str, at: datetime) -> RegistryEntry | None:
    row = conn.execute(
        f"SELECT {', '.join(ENTRY_FIELDS)} FROM meter_registry"
        " WHERE meter_id = %s AND valid_from <= %s AND (valid_to IS NULL OR valid_to > %s)"
        " ORDER BY valid_from DESC LIMIT 1",
        (meter_id, at, at),
    ).fetchone()
    return RegistryEntry(*row) if row else None


def load(conn: psycopg.Connection[Any], lines: Iterable[str], *, source: str) -> LoadReport:
    """Upsert the rows of one export in one transaction, then re-enrich the affected events."""
    added = changed = unchanged = 0
    rejected: list[RowError] = []
    touched: set[str] = set()
    with conn.transaction():
        for item in parse_rows(lines):
            if isinstance(item, RowError):
                rejected.append(item)
                continue
            row = conn.execute(
                _UPSERT, (*(getattr(item, f) for f in ENTRY_FIELDS), source)
            ).fetchone()
            if row is None:
                unchanged += 1
                continue
            touched.add(item.meter_id)
            if row[0]:
                added += 1
            else:
                changed += 1
        enriched = conn.execute(ENRICH_SQL, (sorted(touched),)).rowcount if touched else 0
    return LoadReport(added, changed, unchanged, rejected, enriched)
