"""Decoding edge messages: each kind of bad input is rejected with a reason, good ones pass."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import orjson
import pytest

from ingestor.decode import Decoded, Received, Rejected, RejectReason, decode
from ingestor.registry import RegistryEntry, RowError, parse_rows
from schemas.pleevi import Measurement

NOW = datetime(2026, 5, 5, tzinfo=UTC)
GOOD = {"assetId": "m-1", "timestamp": "2026-05-05T10:00:00Z", "energyValue": 5, "powerValue": 1}


def run(topic: str, payload: bytes, max_bytes: int = 4096) -> Decoded | Rejected:
    return decode(Received(topic, payload, NOW), prefix="ev/v1", max_bytes=max_bytes)


def test_valid_measurement_decodes_with_site() -> None:
    """A valid measurement on its topic comes out typed, with the topic's site."""
    out = run("ev/v1/site-a/m-1/measurement", orjson.dumps(GOOD))
    assert isinstance(out, Decoded)
    assert out.site_id == "site-a"
    assert isinstance(out.message, Measurement)


@pytest.mark.parametrize(
    ("topic", "payload", "category", "needle"),
    [
        ("ev/v1/s/m-1/measurement", b"x" * 5000, RejectReason.OVERSIZED, "exceeds"),
        ("other/s/m-1/measurement", orjson.dumps(GOOD), RejectReason.TOPIC, "does not start"),
        ("ev/v1/s/m-1/status", orjson.dumps(GOOD), RejectReason.TOPIC, "not ingested"),
        ("ev/v1/s/m-1/measurement", b"{not json", RejectReason.JSON, "invalid JSON"),
        ("ev/v1/s/m-1/measurement", b"\xff\xfe", RejectReason.JSON, "invalid JSON"),
        ("ev/v1/s/m-1/measurement", b"[1, 2]", RejectReason.JSON, "JSON object"),
        (
            "ev/v1/s/m-1/measurement",
            orjson.dumps({**GOOD, "timestamp": "2026-05-05T10:00:00"}),
            RejectReason.SCHEMA,
            "timestamp",
        ),
        (
            "ev/v1/s/m-1/measurement",
            orjson.dumps({**GOOD, "energyValue": "lots"}),
            RejectReason.SCHEMA,
            "energyValue",
        ),
        (
            "ev/v1/s/m-1/transaction",
            orjson.dumps(
                {
                    "assetId": "m-1",
                    "transactionId": "t",
                    "timestamp": "2026-05-05T10:00:00Z",
                    "startTime": "2026-05-05T10:00:00Z",
                    "transactionState": "Charging",
                }
            ),
            RejectReason.SCHEMA,
            "transactionState",
        ),
        ("ev/v1/s/m-2/measurement", orjson.dumps(GOOD), RejectReason.ASSET_MISMATCH, "m-2"),
    ],
)
def test_bad_input_is_rejected_with_reason(
    topic: str, payload: bytes, category: RejectReason, needle: str
) -> None:
    """Oversized, unknown topic/kind, bad JSON, naive time, wrong type, unknown state, mismatch."""
    out = run(topic, payload)
    assert isinstance(out, Rejected)
    assert out.category is category
    assert needle in out.reason


def test_registry_csv_parses_and_reports_bad_rows() -> None:
    """Registry rows parse with seed spellings; rows without a valid ValidFrom are reported."""
    text = (
        "MeterId,MeterNumber,ESN,ServicePointId,PremiseId,TransformerId,FeederId,ValidFrom,ValidTo\n"
        "m-1,N1,E1,SP1,P1,T1,F1,2025-01-01,2026-01-01T00:00:00+00:00\n"
        "m-2,N2,,SP2,P2,T2,F2,2025-01-01T00:00:00,\n"
        "m-3,N3,,SP3,P3,T3,F3,2025-02-01,2025-01-01\n"
        ",N4,,SP4,P4,T4,F4,2025-01-01,\n"
    )
    rows = list(parse_rows(io.StringIO(text)))
    assert rows[0] == RegistryEntry(
        meter_id="m-1",
        valid_from=datetime(2025, 1, 1, tzinfo=UTC),
        valid_to=datetime(2026, 1, 1, tzinfo=UTC),
        meter_number="N1",
        esn="E1",
        service_point_id="SP1",
        premise_id="P1",
        transformer_id="T1",
        feeder_id="F1",
    )
    errors = [r for r in rows[1:] if isinstance(r, RowError)]
    assert [e.line for e in errors] == [3, 4, 5]
    assert "offset" in errors[0].reason
    assert "not after" in errors[1].reason
    assert "required" in errors[2].reason
