"""Charging events written straight into ``charging_events`` for the data-API tests, and the
answers those tests expect, computed here in Python independently of the API's SQL."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
"""The API's clock in these tests."""
EARLIEST = datetime(2025, 10, 21, tzinfo=UTC)
"""13 months before NOW, the first day of data available."""


@dataclass(frozen=True)
class Event:
    transaction_id: str
    asset_id: str
    charge_start_time: datetime
    charge_end_time: datetime | None
    received_time: datetime
    charge_w: float
    charge_duration_h: float | None
    charge_energy_wh: float | None
    meter_id: str | None
    meter_number: str | None
    esn: str | None
    service_point_id: str | None
    premise_id: str | None
    transformer_id: str | None
    feeder_id: str | None

    def record(self) -> dict[str, Any]:
        """The event as seed 000 names its fields, times as UTC datetimes."""
        return {
            "ReceivedTime": self.received_time,
            "ServicePointId": self.service_point_id,
            "MeterId": self.meter_id,
            "MeterNumber": self.meter_number,
            "ElectronicSerialNumber": self.esn,
            "TransformerId": self.transformer_id,
            "PremiseId": self.premise_id,
            "ChargeStartTime": self.charge_start_time,
            "ChargeEndTime": self.charge_end_time,
            "ChargeW": self.charge_w,
            "ChargeDuration": self.charge_duration_h,
            "ChargeEnergy": self.charge_energy_wh,
            "FeederId": self.feeder_id,
        }


def meter_identity(i: int) -> dict[str, str | None]:
    """Meter i: on transformer XF-(i % 5), feeder F-(i % 2); meter 49 is not in the registry."""
    if i == 49:
        return dict.fromkeys(
            ("meter_id", "meter_number", "esn", "service_point_id", "premise_id",
             "transformer_id", "feeder_id"),
        )  # fmt: skip
    return {
        "meter_id": f"M-{i:03d}",
        "meter_number": f"N-{i:03d}",
        "esn": f"2.16.840.1.114416.{i:03d}",
        "service_point_id": f"SP-{i:03d}",
        "premise_id": f"P-{i:03d}",
        "transformer_id": f"XF-{i % 5}",
        "feeder_id": f"F-{i % 2}",
    }


def make_events(count: int = 2600, *, now: datetime = NOW, seed: int = 7) -> list[Event]:
    """``count`` completed events every 3 h back from ``now`` (every tenth shares its start
    time with the one before, to exercise the order's tie-break), 20 still open and 30 older
    than the 13 months of data available."""
    rng = random.Random(seed)
    events = []
    start = now - timedelta(hours=1)
    for k in range(count + 50):
        if k % 10 != 0:
            start -= timedelta(hours=3)
        meter = k % 50
        when = now - timedelta(days=400 + k) if k >= count + 20 else start
        duration = timedelta(minutes=rng.randint(20, 600))
        is_open = count <= k < count + 20
        energy = round(rng.uniform(500, 60_000), 2)
        events.append(
            Event(
                transaction_id=f"tx-{k:05d}",
                asset_id=f"dev-{meter:03d}",
                charge_start_time=when,
                charge_end_time=None if is_open else when + duration,
                received_time=when + timedelta(seconds=rng.randint(5, 600)),
                charge_w=round(rng.uniform(1200, 11500), 3),
                charge_duration_h=None if is_open else round(duration.total_seconds() / 3600, 4),
                charge_energy_wh=None if is_open else energy,
                **meter_identity(meter),  # type: ignore[arg-type]
            )
        )
    return events


_COLUMNS = (
    "transaction_id, charge_start_time, asset_id, site_id, status, charge_end_time, charge_w,"
    " charge_duration_h, charge_energy_wh, received_time, last_activity, latest_ended,"
    " latest_sequence, latest_ts, saw_started, start_emitted, end_emitted, registry_matched,"
    " meter_id, meter_number, esn, service_point_id, premise_id, transformer_id, feeder_id"
)


def _values(e: Event) -> tuple[Any, ...]:
    last = e.charge_end_time or e.charge_start_time
    ended = e.charge_end_time is not None
    return (
        e.transaction_id, e.charge_start_time, e.asset_id, "site-1",
        "closed" if ended else "open", e.charge_end_time, e.charge_w, e.charge_duration_h,
        e.charge_energy_wh, e.received_time, last, ended, 1, last, True, True, ended,
        e.meter_id is not None, e.meter_id, e.meter_number, e.esn, e.service_point_id,
        e.premise_id, e.transformer_id, e.feeder_id,
    )  # fmt: skip


def insert_events(conn: psycopg.Connection[Any], events: Iterable[Event], chunk: int = 500) -> None:
    """Multi-row INSERTs (no pipeline, no prepared statements: the WASM TimescaleDB takes them)."""
    rows = [_values(e) for e in events]
    placeholders = "(" + ", ".join(["%s"] * 25) + ")"
    for i in range(0, len(rows), chunk):
        part = rows[i : i + chunk]
        conn.execute(
            f"INSERT INTO charging_events ({_COLUMNS}) VALUES "
            + ", ".join([placeholders] * len(part)),
            [value for row in part for value in row],
            prepare=False,
        )
    conn.commit()


def expected(
    events: Iterable[Event], keep: Callable[[Event], bool] = lambda _: True
) -> list[Event]:
    """Completed events within the 13 months of data that ``keep`` accepts, newest first."""
    found = [
        e
        for e in events
        if e.charge_end_time is not None and e.charge_start_time >= EARLIEST and keep(e)
    ]
    return sorted(found, key=lambda e: (e.charge_start_time, e.transaction_id), reverse=True)
