"""Export files written as PostgreSQL's COPY stream arrives (constant memory).

CSV (seed 000's header) and JSON (one object per line, what pyarrow, pandas ``lines=True`` and
DuckDB stream) are written as the database formats them. Parquet and ORC are converted from the
CSV stream by pyarrow, block by block, with types: timestamps in UTC, doubles for the measured
values, strings for the identifiers (an empty identifier stays empty, a missing one is null).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.orc as pa_orc
import pyarrow.parquet as pq

from schemas.itron import CSV_COLUMNS, FileType

_TIMES = {"ReceivedTime", "ChargeStartTime", "ChargeEndTime"}
_NUMBERS = {"ChargeW", "ChargeDuration", "ChargeEnergy"}
_BLOCK_BYTES = 4 << 20


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


class _ChunkReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _csv_batches(chunks: Iterable[bytes]) -> Iterator[pa.RecordBatch]:
    reader = pa_csv.open_csv(
        io.BufferedReader(_ChunkReader(chunks), buffer_size=_BLOCK_BYTES),
        read_options=pa_csv.ReadOptions(block_size=_BLOCK_BYTES, use_threads=False),
        convert_options=pa_csv.ConvertOptions(
            column_types=ARROW_SCHEMA,
            include_columns=list(CSV_COLUMNS),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    yield from reader


def _write_bytes(chunks: Iterable[bytes], path: Path) -> None:
    with path.open("wb") as file:
        for chunk in chunks:
            file.write(chunk)


def _write_parquet(chunks: Iterable[bytes], path: Path) -> None:
    with pq.ParquetWriter(path, ARROW_SCHEMA, compression="zstd") as writer:
        for batch in _csv_batches(chunks):
            writer.write_batch(batch)


def _write_orc(chunks: Iterable[bytes], path: Path) -> None:
    writer = pa_orc.ORCWriter(str(path), compression="zstd")
    try:
        empty = True
        for batch in _csv_batches(chunks):
            writer.write(pa.Table.from_batches([batch]))
            empty = False
        if empty:  # an ORC file with no rows still carries the schema
            writer.write(ARROW_SCHEMA.empty_table())
    finally:
        writer.close()


WRITERS: dict[FileType, Callable[[Iterable[bytes], Path], None]] = {
    FileType.CSV: _write_bytes,
    FileType.JSON: _write_bytes,
    FileType.PARQUET: _write_parquet,
    FileType.ORC: _write_orc,
}
"""File type -> writer of the COPY stream (CSV for all but JSON, which is JSON lines)."""
