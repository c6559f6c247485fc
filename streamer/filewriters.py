"""Export files written as PostgreSQL's COPY stream (CSV) arrives (constant memory).

CSV (seed 000's header) is written as the database formats it. The others are converted from
that stream by pyarrow, block by block: JSON as one object per line (what pyarrow, pandas
``lines=True`` and DuckDB stream; times as the CSV writes them), Parquet and ORC with types:
timestamps in UTC, doubles for the measured values, strings for the identifiers (an empty
identifier stays empty, a missing one is null).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.orc as pa_orc
import pyarrow.parquet as pq

from schemas.itron import CSV_COLUMNS, NUMBER_COLUMNS, TIME_COLUMNS, FileType

_BLOCK_BYTES = 1 << 20
_JSON_ROWS = 5000


def _arrow_type(name: str) -> Any:
    if name in TIME_COLUMNS:
        return pa.timestamp("us", tz="UTC")
    return pa.float64() if name in NUMBER_COLUMNS else pa.string()


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


def _csv_batches(chunks: Iterable[bytes], schema: pa.Schema = ARROW_SCHEMA) -> Iterator[Any]:
    reader = pa_csv.open_csv(
        io.BufferedReader(_ChunkReader(chunks), buffer_size=_BLOCK_BYTES),
        read_options=pa_csv.ReadOptions(block_size=_BLOCK_BYTES, use_threads=False),
        convert_options=pa_csv.ConvertOptions(
            column_types=schema,
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


_JSON_SCHEMA = pa.schema(
    [pa.field(f.name, pa.string() if f.name in TIME_COLUMNS else f.type) for f in ARROW_SCHEMA]
)
"""Times stay the text the database wrote (ISO 8601, ``Z``)."""


def _json_fragments(batch: Any) -> Any:
    """One JSON object per row, built column-wise: ``"Name":value`` pieces joined by Arrow."""
    pieces = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_string(column.type):
            text = pc.replace_substring(column, "\\", "\\\\")
            text = pc.replace_substring(text, '"', '\\"')
            value = pc.binary_join_element_wise('"', text, '"', "")
        else:
            value = pc.cast(column, pa.string())
        pieces.append(pc.binary_join_element_wise(f'"{name}":', pc.fill_null(value, "null"), ""))
    body = pc.binary_join_element_wise(*pieces, ",")
    return pc.binary_join_element_wise("{", body, "}\n", "")


def _write_json_lines(chunks: Iterable[bytes], path: Path) -> None:
    with path.open("wb") as file:
        for batch in _csv_batches(chunks, _JSON_SCHEMA):
            texts = [c for c in batch.columns if pa.types.is_string(c.type)]
            if any(pc.any(pc.match_substring_regex(c, "[\\x00-\\x1f]")).as_py() for c in texts):
                # Control characters need \u escapes: the rare batch goes through orjson.
                file.write(b"".join(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
                                    for row in batch.to_pylist()))  # fmt: skip
                continue
            for start in range(0, batch.num_rows, _JSON_ROWS):  # small temporaries
                lines = _json_fragments(batch.slice(start, _JSON_ROWS))
                offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32,
                                        count=len(lines) + 1, offset=lines.offset * 4)  # fmt: skip
                file.write(memoryview(lines.buffers()[2])[offsets[0] : offsets[-1]])
            pa.default_memory_pool().release_unused()  # the allocator keeps freed temporaries


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
    FileType.JSON: _write_json_lines,
    FileType.PARQUET: _write_parquet,
    FileType.ORC: _write_orc,
}
"""File type -> writer of the COPY CSV stream."""
