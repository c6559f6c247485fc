"""Export files written chunk by chunk (constant memory), in seed 000's CSV column order.

CSV has seed 000's header; JSON is one object per line (newline-delimited, what pyarrow, pandas
``lines=True`` and DuckDB stream); Parquet and ORC are typed: timestamps in UTC, doubles for
the measured values, strings for the identifiers. Nulls are empty CSV cells and JSON nulls.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.orc as pa_orc
import pyarrow.parquet as pq

from schemas.itron import CSV_COLUMNS, FileType
from schemas.timefmt import format_utc

_TIMES = {"ReceivedTime", "ChargeStartTime", "ChargeEndTime"}
_NUMBERS = {"ChargeW", "ChargeDuration", "ChargeEnergy"}


def _arrow_type(name: str) -> Any:
    if name in _TIMES:
        return pa.timestamp("us", tz="UTC")
    return pa.float64() if name in _NUMBERS else pa.string()


ARROW_SCHEMA = pa.schema([pa.field(name, _arrow_type(name)) for name in CSV_COLUMNS])

MEDIA_TYPE: dict[FileType, str] = {
    FileType.CSV: "text/csv",
    FileType.JSON: "application/x-ndjson",
    FileType.PARQUET: "application/vnd.apache.parquet",
    FileType.ORC: "application/vnd.apache.orc",
}

Rows = Sequence[tuple[Any, ...]]
"""Rows whose values are in CSV_COLUMNS order."""


class ExportWriter(Protocol):
    def write(self, rows: Rows) -> None: ...

    def close(self) -> None: ...


def _text(value: Any) -> Any:
    return format_utc(value) if isinstance(value, datetime) else value


class CsvWriter:
    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv.writerow(CSV_COLUMNS)

    def write(self, rows: Rows) -> None:
        self._csv.writerows([_text(v) for v in row] for row in rows)

    def close(self) -> None:
        self._file.close()


class JsonLinesWriter:
    def __init__(self, path: Path) -> None:
        self._file: IO[bytes] = path.open("wb")

    def write(self, rows: Rows) -> None:
        # orjson writes aware datetimes as RFC 3339; UTC_Z gives the "Z" every output uses.
        self._file.write(b"".join(
            orjson.dumps(dict(zip(CSV_COLUMNS, row, strict=True)),
                         option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE)
            for row in rows
        ))  # fmt: skip

    def close(self) -> None:
        self._file.close()


def _batch(rows: Rows) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(CSV_COLUMNS)
    return pa.RecordBatch.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, ARROW_SCHEMA, strict=True)],
        schema=ARROW_SCHEMA,
    )


class ParquetWriter:
    def __init__(self, path: Path) -> None:
        self._writer = pq.ParquetWriter(path, ARROW_SCHEMA, compression="zstd")

    def write(self, rows: Rows) -> None:
        self._writer.write_batch(_batch(rows))

    def close(self) -> None:
        self._writer.close()


class OrcWriter:
    def __init__(self, path: Path) -> None:
        self._writer = pa_orc.ORCWriter(str(path), compression="zstd")
        self._empty = True

    def write(self, rows: Rows) -> None:
        if rows:
            self._writer.write(pa.Table.from_batches([_batch(rows)]))
            self._empty = False

    def close(self) -> None:
        if self._empty:  # an ORC file with no rows still carries the schema
            self._writer.write(ARROW_SCHEMA.empty_table())
        self._writer.close()


def open_writer(filetype: FileType, path: Path) -> ExportWriter:
    writers: dict[FileType, Callable[[Path], ExportWriter]] = {
        FileType.CSV: CsvWriter,
        FileType.JSON: JsonLinesWriter,
        FileType.PARQUET: ParquetWriter,
        FileType.ORC: OrcWriter,
    }
    return writers[filetype](path)
