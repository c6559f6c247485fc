"""The TimescaleDB path: the same migrations, writes and queries give the same results as on
plain PostgreSQL, plus hypertables, compression, retention and the continuous aggregate."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg_pool import ConnectionPool

from ingestor.decode import Decoded, Received, decode
from ingestor.store import Store
from runtime.localservers import LiteTimescaleServer, LocalServerError
from runtime.migrations import Flavour, migrate
from schemas.itron import BatchRequest, EntityType, FileType, OnDemandRequest
from streamer import exports
from streamer.eventquery import on_demand_query, page_sql, subscription_condition
from streamer.exports import ExportRunner
from tests.conftest import _unavailable
from tests.integration.eventdata import NOW, insert_events, make_events
from tests.integration.services import T0, measurement, session

pytestmark = pytest.mark.integration
PREFIX = "ev/v1"


@pytest.fixture(scope="module")
def timescale_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = LiteTimescaleServer(tmp_path_factory.mktemp("timescale"))
    try:
        server.start()
    except LocalServerError as exc:
        _unavailable(str(exc))
    yield server.dsn()
    server.stop()


def connect(dsn: str) -> psycopg.Connection[Any]:
    """The WASM server takes a moment to accept the next connection after one closes."""
    for _ in range(50):
        try:
            return psycopg.connect(dsn)
        except psycopg.OperationalError:
            time.sleep(0.2)
    return psycopg.connect(dsn)


def migrate_lite(dsn: str) -> tuple[Flavour, list[str]]:
    """``migrate`` on the WASM server, which may refuse a connection right after another."""
    for _ in range(50):
        try:
            return migrate(dsn)
        except psycopg.OperationalError:
            time.sleep(0.2)
    return migrate(dsn)


def batch() -> list[Decoded]:
    now = datetime(2026, 5, 6, tzinfo=UTC)
    messages = [measurement(PREFIX, "m-1", minute) for minute in range(30)]
    messages += session(PREFIX, "m-1", "tx-1") + session(PREFIX, "m-2", "tx-2", offset=40)
    messages += session(PREFIX, "m-1", "tx-1")[1:3]  # redelivered
    out = []
    for topic, payload in messages:
        decoded = decode(Received(topic, payload, now), prefix=PREFIX, max_bytes=65536)
        assert isinstance(decoded, Decoded)
        out.append(decoded)
    return out


EVENT_QUERY = (
    "SELECT transaction_id, charge_start_time, charge_end_time, charge_w, charge_duration_h,"
    " charge_energy_wh, status, flags FROM charging_events ORDER BY transaction_id"
)
AGGREGATE_QUERY = (
    "SELECT bucket, transformer_id, sessions_started, sessions_ended, ended_energy_wh,"
    " peak_ev_power_w FROM ev_transformer_15m ORDER BY bucket, transformer_id"
)


def write_and_read(conn: psycopg.Connection[Any], store: Store) -> tuple[Any, ...]:
    items = batch()
    with conn.transaction():
        first = store.write_batch(conn, items, [])
    with conn.transaction():
        again = store.write_batch(conn, items, [])
    assert (first.measurements_stored, again.measurements_duplicate) == (30, 30)
    assert (first.transactions_stored, first.transactions_duplicate) == (8, 2)
    assert again.transactions_stored == 0
    events = conn.execute(EVENT_QUERY).fetchall()
    outbox = conn.execute("SELECT transaction_id, kind, payload FROM outbox ORDER BY id").fetchall()
    aggregate = conn.execute(AGGREGATE_QUERY).fetchall()
    return events, outbox, aggregate


def test_timescale_path_matches_plain_postgres(timescale_dsn: str, database: str) -> None:
    """Migrations pick TimescaleDB; the same batch gives the same events, outbox rows and
    15-minute transformer aggregate as on plain PostgreSQL."""
    flavour, applied = migrate_lite(timescale_dsn)
    assert flavour is Flavour.TIMESCALE
    everything = [
        "0001_core",
        "0002_timeseries",
        "0003_streamer",
        "0004_data_api",
        "0005_power_limits",
        "0006_control_scope",
        "0007_feeder_control_scope",
    ]
    assert applied == everything
    assert migrate(database) == (Flavour.POSTGRES, everything)
    with connect(timescale_dsn) as conn:
        hypertables = {
            name
            for (name,) in conn.execute(
                "SELECT hypertable_name FROM timescaledb_information.hypertables"
            )
        }
        assert hypertables == {"measurements", "transaction_log", "charging_events"}
        jobs = {
            (proc, table)
            for proc, table in conn.execute(
                "SELECT proc_name, hypertable_name FROM timescaledb_information.jobs"
                " WHERE proc_name <> 'policy_job_stat_history_retention'"
            )
        }
        assert ("policy_retention", "charging_events") in jobs
        assert ("policy_compression", "measurements") in jobs
        assert any(proc == "policy_refresh_continuous_aggregate" for proc, _ in jobs)
        lite = write_and_read(conn, Store(use_copy=False))
    with psycopg.connect(database) as conn:
        plain = write_and_read(conn, Store(use_copy=True))
    assert lite[0] == plain[0]
    assert [(t, k) for t, k, _ in lite[1]] == [(t, k) for t, k, _ in plain[1]]
    assert [p for _, _, p in lite[1]] == [p for _, _, p in plain[1]]
    assert lite[2] == plain[2]
    assert len(lite[0]) == 2
    assert lite[2][0][0] == T0


def test_timescale_retention_and_compression_jobs_run(timescale_dsn: str) -> None:
    """Run the policies the server's scheduler would run: old chunks compress, rows older than
    13 months are dropped, and the aggregate refreshes."""
    migrate_lite(timescale_dsn)
    old = datetime.now(UTC) - timedelta(days=500)
    recent = datetime.now(UTC) - timedelta(days=40)
    with connect(timescale_dsn) as conn:
        conn.execute(
            "INSERT INTO measurements VALUES ('r', %s, 1, 1, NULL, 's', now()),"
            " ('r', %s, 1, 1, NULL, 's', now())",
            (old, recent),
        )
        conn.commit()
        (job,) = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_compression' AND hypertable_name = 'measurements'"
        ).fetchone() or (None,)
        conn.commit()
        conn.autocommit = True
        conn.execute("CALL run_job(%s)", (job,))
        compressed = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'measurements' AND is_compressed"
        ).fetchone()
        assert compressed is not None
        assert compressed[0] >= 1
        dropped = conn.execute("SELECT ev_apply_retention()").fetchone()
        assert dropped is not None
        assert dropped[0] >= 1
        left = conn.execute("SELECT ts FROM measurements WHERE asset_id = 'r'").fetchall()
        assert [row[0] for row in left] == [recent]
        conn.execute("CALL refresh_continuous_aggregate('ev_transformer_15m', NULL, NULL)")


def data_api_answers(dsn: str, export_dir: Path) -> tuple[list[Any], list[Any]]:
    """An on-demand page and a Parquet batch export, as the API would run them."""
    query = on_demand_query(
        OnDemandRequest(EntityType="Transformer", EntityId=["XF-1", "XF-3"],
                        StartEventDate="2026-04-01", EndEventDate="2026-10-31"),
        subscription_condition(EntityType.NONE, []),
        now=NOW,
    )  # fmt: skip
    with connect(dsn) as conn:
        statement, params = page_sql(query, None, 100)
        page = conn.execute(statement, params).fetchall()
        conn.execute(
            "INSERT INTO subscribers VALUES ('s', 'h', 'p', now()) ON CONFLICT DO NOTHING;"
            " INSERT INTO subscriptions (subscription_id, subscriber_id, entity_type, start_after)"
            " VALUES ('sub', 's', 'None', 0) ON CONFLICT DO NOTHING"
        )
        job = exports.submit(
            conn, "sub", BatchRequest(filetype="parquet"), query,
            correlation_id=None, base_path="/x",
        )  # fmt: skip
        conn.commit()
    pool = ConnectionPool(dsn, min_size=1, max_size=1, open=True)
    try:
        assert ExportRunner(pool, export_dir, max_rows=10_000).run_once() == job.job_id
    finally:
        pool.close()
    table = pq.read_table(exports.file_path(export_dir, job.job_id, FileType.PARQUET))
    return page, table.to_pylist()


def test_data_api_queries_give_the_same_answers_on_timescale(
    timescale_dsn: str, database: str, tmp_path: Path
) -> None:
    """On-demand pages and batch exports read the charging_events hypertable exactly as they
    read the partitioned table."""
    migrate_lite(timescale_dsn)
    migrate(database)
    events = make_events(1500)
    with connect(timescale_dsn) as conn:
        insert_events(conn, events)
    with psycopg.connect(database) as conn:
        insert_events(conn, events)
    lite = data_api_answers(timescale_dsn, tmp_path / "lite")
    plain = data_api_answers(database, tmp_path / "plain")
    assert lite == plain
    assert len(lite[0]) == 100
    want = [e for e in events if e.transformer_id in {"XF-1", "XF-3"}
            and e.charge_end_time is not None
            and datetime(2026, 4, 1, tzinfo=UTC) <= e.charge_start_time
            <= datetime(2026, 10, 31, tzinfo=UTC)]  # fmt: skip
    assert len(lite[1]) == len(want) > 100
