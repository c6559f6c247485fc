"""Ingest throughput: one ingestor process vs a naive consumer vs the broker's own ceiling.

    .venv/bin/python -m bench.ingest_throughput [--messages 60000] [--publishers 4]

Each run floods a private Mosquitto with Pleevi measurement messages from C publishers
(``mosquitto_pub -l``, QoS 1, at most 50,000 lines each) and times, from the first publish:

* ``mosquitto_sub``: a C subscriber draining the flood to /dev/null (the broker's ceiling);
* ``naive``: a paho consumer doing one INSERT + commit per message;
* ``ingestor``: ``python -m ingestor run`` (batched COPY, ack after commit) until every row is
  in the database.

The database is a private PostgreSQL started for the run; both consumers commit durably
(``synchronous_commit = on``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from runtime.localservers import MosquittoServer, PostgresServer, server_directory
from runtime.migrations import migrate

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "ev/v1"
T0 = datetime(2026, 5, 1, tzinfo=UTC)


def write_floods(directory: Path, messages: int, publishers: int) -> list[tuple[str, Path]]:
    per = messages // publishers
    floods = []
    for k in range(publishers):
        asset = f"bench-{k}"
        path = directory / f"flood-{k}.jsonl"
        with path.open("wb") as out:
            for i in range(per):
                out.write(
                    orjson.dumps(
                        {
                            "assetId": asset,
                            "timestamp": (T0 + timedelta(seconds=i)).isoformat(),
                            "energyValue": 1000.0 + i,
                            "powerValue": 1500.0,
                        }
                    )
                    + b"\n"
                )
        floods.append((f"{PREFIX}/site-1/{asset}/measurement", path))
    return floods


def flood(port: int, floods: list[tuple[str, Path]]) -> float:
    """Start the publishers; returns the start time (they finish on their own)."""
    started = time.perf_counter()
    procs = []
    for topic, path in floods:
        with path.open("rb") as lines:
            procs.append(
                subprocess.Popen(
                    ["mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic, "-l"],
                    stdin=lines,
                )
            )
    threading.Thread(target=lambda: [p.wait() for p in procs], daemon=True).start()
    return started


def count_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM measurements").fetchone()
    return int(row[0]) if row else 0


def wait_rows(dsn: str, expected: int, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if count_rows(dsn) >= expected:
            return time.perf_counter()
        time.sleep(0.05)
    raise SystemExit(f"timed out: {count_rows(dsn)} of {expected} rows stored")


def fresh_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    migrate(dsn)
    return dsn


def run_broker_ceiling(port: int, floods: list[tuple[str, Path]], total: int) -> float:
    with open(os.devnull, "wb") as null:
        sub = subprocess.Popen(
            ["mosquitto_sub", "-p", str(port), "-q", "1", "-t", f"{PREFIX}/+/+/measurement",
             "-C", str(total)],
            stdout=null,
        )  # fmt: skip
        time.sleep(0.5)
        started = flood(port, floods)
        sub.wait(timeout=600)
    return total / (time.perf_counter() - started)


def run_naive(port: int, floods: list[tuple[str, Path]], total: int, dsn: str) -> float:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET synchronous_commit = on")

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        body = orjson.loads(msg.payload)
        conn.execute(
            "INSERT INTO measurements VALUES (%s, %s, %s, %s, NULL, 'site-1', now())"
            " ON CONFLICT DO NOTHING",
            (body["assetId"], body["timestamp"], body["energyValue"], body["powerValue"]),
        )

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="naive", protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(f"{PREFIX}/+/+/measurement", qos=1)
    client.loop_start()
    time.sleep(0.5)
    started = flood(port, floods)
    done = wait_rows(dsn, total, timeout=1200)
    client.loop_stop()
    client.disconnect()
    conn.close()
    return total / (done - started)


def run_ingestor(
    port: int, floods: list[tuple[str, Path]], total: int, dsn: str, log: Path
) -> float:
    env = {
        **os.environ,
        "INGEST_DATABASE_URL": dsn,
        "INGEST_MQTT__PORT": str(port),
        "INGEST_METRICS_PORT": "0",
        "INGEST_CLIENT_ID": "bench-ingestor",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingestor", "run"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "subscribed" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        started = flood(port, floods)
        done = wait_rows(dsn, total, timeout=600)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            tail = log.read_text()[-3000:]
            raise SystemExit(f"the ingestor did not stop on SIGTERM:\n{tail}") from None
    return total / (done - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--publishers", type=int, default=4)
    args = parser.parse_args()
    per = args.messages // args.publishers
    if per > 50_000:
        raise SystemExit("at most 50,000 lines per mosquitto_pub (16-bit message ids)")
    total = per * args.publishers
    work = Path(tempfile.mkdtemp(prefix="ev-bench-"))
    broker = MosquittoServer(work / "mosquitto")
    postgres = PostgresServer(server_directory("ev-bench-pg-"))
    broker.start()
    postgres.start()
    try:
        floods = write_floods(work, total, args.publishers)
        ceiling = run_broker_ceiling(broker.port, floods, total)
        naive = run_naive(broker.port, floods, total, fresh_database(postgres.dsn(), "naive"))
        ours = run_ingestor(
            broker.port, floods, total, fresh_database(postgres.dsn(), "ingestor"),
            work / "ingestor.log",
        )  # fmt: skip
    finally:
        broker.stop()
        postgres.stop(mode="immediate")
        shutil.rmtree(postgres.directory, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{total} QoS 1 measurement messages from {args.publishers} mosquitto_pub processes")
    print(f"{'consumer':<16}{'rows/s':>10}{'vs naive':>10}{'vs ceiling':>12}")
    for name, rate in (("mosquitto_sub", ceiling), ("naive INSERT", naive), ("ingestor", ours)):
        print(f"{name:<16}{rate:>10,.0f}{rate / naive:>9.1f}x{rate / ceiling:>11.0%}")


if __name__ == "__main__":
    main()
