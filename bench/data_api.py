"""Data API at scale: on-demand pages and batch exports over millions of charging events.

    .venv/bin/python -m bench.data_api [--events 10000000] [--queries 200] [--export-rows 1000000]

A private PostgreSQL is started and migrated, then filled (in SQL) with ``--events`` completed
charging events over the last 12 months: 100,000 meters, 20 per transformer, 500 per feeder.

On-demand: ``--queries`` requests of 1,000 rows each through the HTTP API (uvicorn, real
authentication, JSON), for one transformer, a list of 15 meters, and a one-week date range,
each with a random id or week: a first pass, then the same requests again (pages cached);
side by side with the same SQL run directly (the database's share). Then a deep page: page
50 of the date range by the API's keyset token vs by OFFSET.

Batch export: about ``--export-rows`` events (a date range) to each file type by the export
runner, each in its own process, timing it and reading its peak resident memory; side by side
with a naive baseline: the same rows fetched into Python and written with the csv module.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import uvicorn
from psycopg import sql

from runtime.database import open_pool
from runtime.localservers import PostgresServer, free_port, server_directory
from runtime.migrations import migrate
from schemas.itron import CSV_COLUMNS, BatchRequest, BatchTokens, FileType, OnDemandRequest
from schemas.timefmt import format_utc
from streamer import exports, subscriptions
from streamer.api import BASE, NEXT_PAGE_HEADER, create_app
from streamer.eventquery import COLUMN, EventQuery, batch_query, on_demand_query, page_sql
from streamer.exports import ExportRunner
from streamer.service import ApiServer

ROOT = Path(__file__).resolve().parents[1]
METERS = 100_000
PER_TRANSFORMER = 20
PER_FEEDER = 500

GENERATE = """
INSERT INTO charging_events (transaction_id, charge_start_time, asset_id, site_id, status,
    charge_end_time, charge_w, charge_duration_h, charge_energy_wh, received_time,
    last_activity, latest_ended, latest_sequence, latest_ts, saw_started, start_emitted,
    end_emitted, registry_matched, meter_id, meter_number, esn, service_point_id, premise_id,
    transformer_id, feeder_id)
SELECT 'tx-' || n, s, 'dev-' || m, 'site-' || (m / 1000), 'closed', s + d, w,
    extract(epoch FROM d) / 3600, w * extract(epoch FROM d) / 3600 * 0.9,
    s + interval '40 seconds', s + d, true, 3, s + d, true, true, true, true,
    'M-' || m, 'N-' || m, '2.16.840.1.114416.' || m, 'SP-' || m, 'P-' || m,
    'XF-' || (m / %(per_transformer)s), 'F-' || (m / %(per_feeder)s)
FROM (
    SELECT n, n %% %(meters)s AS m,
        %(first)s::timestamptz + (hashint8(n) & 2147483647) %% %(span)s * interval '1 second' AS s,
        (20 + (hashint8(n + 1) & 2147483647) %% 580) * interval '1 minute' AS d,
        1400 + (hashint8(n + 2) & 2147483647) %% 10000 AS w
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS n
) AS g
"""


def fill(dsn: str, events: int, now: datetime) -> float:
    first = now - timedelta(days=365)
    started = time.perf_counter()
    chunk = 1_000_000
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '1GB'")
        # A bulk load, then the migrations' own secondary indexes (as a restore would).
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'charging_events'"
            " AND indexname NOT LIKE '%%pkey'"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        for lo in range(0, events, chunk):
            hi = min(events, lo + chunk) - 1
            conn.execute(GENERATE, {"first": first, "span": 365 * 86400, "lo": lo, "hi": hi,
                                    "meters": METERS, "per_transformer": PER_TRANSFORMER,
                                    "per_feeder": PER_FEEDER})  # fmt: skip
            print(f"  {hi + 1:>11,} events ({time.perf_counter() - started:.0f} s)", flush=True)
        for _, definition in indexes:
            # pg_indexes shows a partitioned table's index ON ONLY the parent.
            conn.execute(definition.replace(" ON ONLY ", " ON "))
        conn.execute("VACUUM ANALYZE charging_events")
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def on_demand_bodies(kind: str, rng: random.Random, now: datetime) -> dict[str, Any]:
    if kind == "transformer":
        return {"EntityType": "Transformer",
                "EntityId": [f"XF-{rng.randrange(METERS // PER_TRANSFORMER)}"]}  # fmt: skip
    if kind == "meters (15)":
        return {"EntityType": "Meter",
                "EntityId": [f"M-{rng.randrange(METERS)}" for _ in range(15)]}  # fmt: skip
    start = now - timedelta(days=rng.randrange(8, 360))
    return {"StartEventDate": start.isoformat(),
            "EndEventDate": (start + timedelta(days=7)).isoformat()}  # fmt: skip


def measure_on_demand(dsn: str, queries: int, now: datetime) -> list[tuple[str, ...]]:
    with psycopg.connect(dsn) as conn:
        issued = subscriptions.issue_credentials(conn, "bench")
    pool = open_pool(dsn, max_size=4)
    app = create_app(pool, export_dir=Path(tempfile.gettempdir()), clock=lambda: now)
    port = free_port()
    server = ApiServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = server.start_in_thread()
    rows: list[tuple[str, ...]] = []
    headers = {"Authorization": f"Bearer {issued.api_token}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers,
                          timeout=60) as client, psycopg.connect(dsn) as conn:  # fmt: skip
            sub = client.post(BASE, json={}).json()["SubscriptionId"]
            path = f"{BASE}/{sub}/on-demand"
            kinds = ("transformer", "meters (15)", "date range (7 days)")
            for kind, cache in [(k, c) for c in ("1st pass", "2nd pass") for k in kinds]:
                # The second pass repeats the first's requests: their pages are now cached.
                rng = random.Random(kind)
                api_times, sql_times, sizes = [], [], []
                for i in range(queries + 10):
                    body = on_demand_bodies(kind, rng, now)
                    t0 = time.perf_counter()
                    response = client.post(path, json=body)
                    t1 = time.perf_counter()
                    assert response.status_code == 200, response.text
                    statement, params = page_sql(_query(body, now), None, 1001)
                    t2 = time.perf_counter()
                    conn.execute(statement, params).fetchall()
                    t3 = time.perf_counter()
                    if i >= 10:  # warm-up
                        api_times.append(t1 - t0)
                        sql_times.append(t3 - t2)
                        sizes.append(len(response.json()))
                rows.append((f"{kind}, {cache}", f"{statistics.median(sizes):.0f}",
                             *(f"{percentile(v, q) * 1000:.1f}"
                               for v in (api_times, sql_times) for q in (50, 99))))  # fmt: skip
            rows.append(deep_page(client, conn, path, now))
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        pool.close()
    return rows


def _query(body: dict[str, Any], now: datetime) -> EventQuery:
    return on_demand_query(OnDemandRequest.model_validate(body), [], now=now)


def deep_page(
    client: httpx.Client, conn: psycopg.Connection[Any], path: str, now: datetime
) -> tuple[str, ...]:
    """Page 50 (or the last) of a 30-day range: the keyset token (API) vs OFFSET (SQL)."""
    body = {"StartEventDate": (now - timedelta(days=60)).isoformat(),
            "EndEventDate": (now - timedelta(days=30)).isoformat()}  # fmt: skip
    token = None
    page = 1
    while page < 50:
        response = client.post(path, json={**body, "PageToken": token} if token else body)
        if NEXT_PAGE_HEADER not in response.headers:
            break
        token = response.headers[NEXT_PAGE_HEADER]
        page += 1
    keyset = []
    for _ in range(20):
        t0 = time.perf_counter()
        client.post(path, json={**body, "PageToken": token})
        keyset.append(time.perf_counter() - t0)
    where, params = _query(body, now).where()
    statement = sql.SQL(
        "SELECT * FROM charging_events WHERE {} ORDER BY charge_start_time DESC,"
        " transaction_id DESC OFFSET {} LIMIT 1000"
    ).format(where, sql.Literal((page - 1) * 1000))
    offset = []
    for _ in range(20):
        t0 = time.perf_counter()
        conn.execute(statement, params).fetchall()
        offset.append(time.perf_counter() - t0)
    return (f"page {page} of 30 days", "1000", f"{statistics.median(keyset) * 1000:.1f}",
            f"{max(keyset) * 1000:.1f}", f"{statistics.median(offset) * 1000:.1f}",
            f"{max(offset) * 1000:.1f}")  # fmt: skip


def export_one(dsn: str, filetype: str, query_json: str, out: str) -> None:
    """Child process: run one export job and print its row count and size."""
    query = EventQuery.from_json(orjson.loads(query_json))
    pool = open_pool(dsn, max_size=2)
    with pool.connection() as conn:
        conn.execute("DELETE FROM export_jobs")
        sub = conn.execute("SELECT subscription_id FROM subscriptions LIMIT 1").fetchone()
        assert sub is not None
        job = exports.submit(conn, sub[0], BatchRequest(filetype=FileType(filetype)), query,
                             correlation_id=None, base_path=BASE)  # fmt: skip
    ExportRunner(pool, Path(out), max_rows=50_000_000).run_once()
    with pool.connection() as conn:
        row = conn.execute("SELECT status, reason, row_count, size_bytes FROM export_jobs"
                           " WHERE job_id = %s", (job.job_id,)).fetchone()  # fmt: skip
    pool.close()
    print(orjson.dumps(row).decode())


def naive_one(dsn: str, query_json: str, out: str) -> None:
    """Child process, the baseline: rows fetched into Python (server-side cursor, 20,000 at a
    time) and written with the csv module."""
    query = EventQuery.from_json(orjson.loads(query_json))
    where, params = query.where()
    columns = sql.SQL(", ").join(sql.Identifier(COLUMN[name]) for name in CSV_COLUMNS)
    statement = sql.SQL(
        "SELECT {} FROM charging_events WHERE {} ORDER BY charge_start_time, transaction_id"
    ).format(columns, where)
    count = 0
    with (
        psycopg.connect(dsn) as conn,
        conn.cursor(name="naive") as cur,
        Path(out).open("w", newline="") as file,
    ):
        writer = csv.writer(file)
        writer.writerow(CSV_COLUMNS)
        cur.execute(statement, params)
        while rows := cur.fetchmany(20_000):
            writer.writerows([format_utc(v) if isinstance(v, datetime) else v for v in row]
                             for row in rows)  # fmt: skip
            count += len(rows)
    print(orjson.dumps([None, None, count, Path(out).stat().st_size]).decode())


def measure_exports(
    dsn: str, rows_wanted: int, events: int, now: datetime, work: Path
) -> list[Any]:
    days = max(1, round(365 * rows_wanted / events))
    tokens = BatchTokens(StartEventDate=(now - timedelta(days=days + 30)).isoformat(),
                         EndEventDate=(now - timedelta(days=30)).isoformat())  # fmt: skip
    query_json = orjson.dumps(batch_query(tokens, [], now=now).to_json()).decode()
    results = []
    for name in ("naive csv (baseline)", "csv", "json", "parquet", "orc"):
        if name.startswith("naive"):
            argv = ["naive-one", dsn, query_json, str(work / "naive.csv")]
        else:
            argv = ["export-one", dsn, name, query_json, str(work)]
        t0 = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "bench.data_api", *argv], cwd=ROOT,
                                 stdout=subprocess.PIPE)  # fmt: skip
        assert child.stdout is not None
        output = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - t0
        assert status == 0, output
        state, reason, count, size = orjson.loads(output.splitlines()[-1])
        assert state in (None, "done"), reason
        results.append((name, count, size, elapsed, usage.ru_maxrss / 1024))
        for produced in work.iterdir():
            produced.unlink()
    return results


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "export-one":
        export_one(*sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "naive-one":
        naive_one(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--export-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    work = Path(tempfile.mkdtemp(prefix="ev-bench-"))
    postgres = PostgresServer(server_directory("ev-bench-pg-"))
    postgres.start()
    try:
        dsn = postgres.dsn()
        migrate(dsn)
        print(f"filling {args.events:,} events")
        filled = fill(dsn, args.events, now)
        on_demand = measure_on_demand(dsn, args.queries, now)
        exported = measure_exports(dsn, args.export_rows, args.events, now, work)
    finally:
        postgres.stop(mode="immediate")
        shutil.rmtree(postgres.directory, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.events:,} events loaded in {filled:.0f} s; on-demand, {args.queries} requests"
          " each (ms):")  # fmt: skip
    print(f"{'filter':<28}{'rows':>6}{'API p50':>9}{'API p99':>9}{'SQL p50':>9}{'SQL p99':>9}")
    for row in on_demand[:-1]:
        print(f"{row[0]:<28}{row[1]:>6}" + "".join(f"{v:>9}" for v in row[2:]))
    deep = on_demand[-1]
    print(f"{deep[0]:<28}{deep[1]:>6}  keyset via API median {deep[2]} max {deep[3]};"
          f" OFFSET in SQL median {deep[4]} max {deep[5]}")  # fmt: skip
    print("\nbatch export (each in its own process):")
    print(f"{'file':<28}{'rows':>10}{'MB':>8}{'seconds':>9}{'peak RSS MB':>13}")
    for name, count, size, elapsed, rss in exported:
        rows = "" if count is None else f"{count:,}"
        print(f"{name:<28}{rows:>10}{size / 1e6:>8.1f}{elapsed:>9.1f}{rss:>13.0f}")


if __name__ == "__main__":
    main()
