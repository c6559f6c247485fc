"""Export writers convert the database's CSV stream exactly, whatever the identifiers hold."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from schemas.itron import CSV_COLUMNS, FileType
from streamer.filewriters import WRITERS

AWKWARD = ['quote " in it', "back\\slash", "ünïcødé ⚡", "", None, "tab\there", "comma, too"]


def csv_stream(values: list[str | None]) -> list[bytes]:
    """As PostgreSQL's COPY (FORMAT csv) writes rows: NULL unquoted and empty, '' quoted."""
    out = io.StringIO()
    out.write(",".join(CSV_COLUMNS) + "\n")
    for value in values:
        cells = []
        for name in CSV_COLUMNS:
            if name in {"ReceivedTime", "ChargeStartTime", "ChargeEndTime"}:
                cells.append("2026-01-01T10:00:00.5Z")
            elif name in {"ChargeW", "ChargeDuration", "ChargeEnergy"}:
                cells.append("1234.5")
            elif value is None:
                cells.append("")
            else:
                buffer = io.StringIO()
                csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="").writerow([value])
                cells.append(buffer.getvalue())
        out.write(",".join(cells) + "\n")
    data = out.getvalue().encode()
    return [data[i : i + 7] for i in range(0, len(data), 7)]  # chunk boundaries anywhere


@pytest.mark.parametrize("value", AWKWARD)
def test_json_lines_escape_every_identifier(tmp_path: Path, value: str | None) -> None:
    path = tmp_path / "out.json"
    WRITERS[FileType.JSON](csv_stream([value, "plain"]), path)
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [row["MeterId"] for row in rows] == [value, "plain"]
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert rows[0]["ChargeW"] == 1234.5
    assert rows[0]["ChargeStartTime"] == "2026-01-01T10:00:00.5Z"


def test_parquet_keeps_empty_and_missing_apart(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    WRITERS[FileType.PARQUET](csv_stream(AWKWARD), path)
    assert pq.read_table(path).column("MeterId").to_pylist() == AWKWARD
