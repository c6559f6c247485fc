"""Live delivery latency: the ingestor's commit of a start/end -> the subscriber's receipt.

    .venv/bin/python -m bench.stream_latency [--rate 1000] [--seconds 15] [--subscriptions 100]

A private Mosquitto and PostgreSQL; ``python -m ingestor run`` absorbing a background flood of
measurement messages (``mosquitto_pub``, as in bench.ingest_throughput); session start/end rows
committed to the outbox at ``--rate`` events/s in 10 ms transactions (the ingestor's own write
path, timed at each commit); ``python -m streamer run`` with ``--subscriptions`` subscriptions
(one per transformer, plus one catch-all, so every event goes to two topics); and a real paho
subscriber on all subscription topics recording each event's receipt.

Baseline in the same run, under the same flood: the broker's own floor, the same payloads
published straight to a topic at the same rate, publish -> receipt.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.ingest_throughput import ROOT, flood, fresh_database, write_floods
from runtime.localservers import MosquittoServer, PostgresServer, free_port, server_directory
from schemas.itron import EntityType
from schemas.subscriptions import SubscriptionRequest
from streamer import subscriptions

PREFIX = "ev/v1"


def event(n: int, transformers: int) -> tuple[str, str, str, dict[str, object]]:
    tid, kind = f"bench-{n // 2}", ("start", "end")[n % 2]
    body = {
        "ServicePointID": f"SP-{n // 2 % 5000}", "MeterID": f"m-{n // 2 % 5000}",
        "MeterNumber": None, "ESN": None, "TransformerID": f"XF-{n // 2 % transformers}",
        "PremiseID": None, "ReceivedTime": "2026-05-04T18:00:05Z",
        "ChargeStartTime": "2026-05-04T18:00:00Z" if kind == "start" else None,
        "ChargeEndTime": None if kind == "start" else "2026-05-04T20:00:00Z",
        "ChargeW": 7200.0 if kind == "start" else None,
        "ChargeDuration": None if kind == "start" else 2.0,
        "ChargeEnergy": None if kind == "start" else 14400.0,
    }  # fmt: skip
    return tid, kind, str(body["MeterID"]), body


class Receiver:
    """Records the first receipt time of every (topic, event id)."""

    def __init__(self, port: int, topic: str) -> None:
        self.received: dict[tuple[str, str], float] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        for name, value in getattr(message.properties, "UserProperty", []):
            if name == "event-id":
                self.received.setdefault((message.topic, value), now)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def paced(rate: int, seconds: float, step: float = 0.01) -> list[range]:
    """Event numbers per ``step`` tick."""
    per_tick = max(1, round(rate * step))
    return [range(i * per_tick, (i + 1) * per_tick) for i in range(int(seconds / step))]


def wait_for(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


def run_floor(port: int, rate: int, seconds: float, transformers: int) -> list[float]:
    receiver = Receiver(port, "floor/#")
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sender.max_inflight_messages_set(65_535)
    sender.connect("127.0.0.1", port)
    sender.loop_start()
    sent: dict[str, float] = {}
    start = time.monotonic()
    for tick, numbers in enumerate(paced(rate, seconds)):
        time.sleep(max(0.0, start + tick * 0.01 - time.monotonic()))
        for n in numbers:
            tid, kind, _, body = event(n, transformers)
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = [("event-id", f"{tid}:{kind}")]
            sent[f"{tid}:{kind}"] = time.time()
            sender.publish("floor/events", orjson.dumps({"EVChargingEvents": [body]}), 1,
                           properties=props)  # fmt: skip
    wait_for(lambda: len(receiver.received) >= len(sent), 30)
    sender.disconnect()
    sender.loop_stop()
    receiver.close()
    return [receiver.received[t, e] - sent[e] for t, e in receiver.received]


def run_streamer(
    port: int, dsn: str, *, rate: int, seconds: float, subs: int, work: Path
) -> tuple[list[float], int]:
    with psycopg.connect(dsn) as conn:
        subscriptions.issue_credentials(conn, "bench")
        for k in range(subs - 1):
            request = SubscriptionRequest(EntityType=EntityType.TRANSFORMER, EntityId=[f"XF-{k}"])
            subscriptions.create(conn, "bench", request)
        subscriptions.create(conn, "bench", SubscriptionRequest())
    receiver = Receiver(port, f"{PREFIX}/subscriptions/+/events")
    env = {**os.environ, "STREAM_DATABASE_URL": dsn, "STREAM_MQTT__PORT": str(port),
           "STREAM_HTTP_PORT": str(free_port()), "STREAM_METRICS_PORT": "0"}  # fmt: skip
    log = work / "streamer.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "run"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    committed: dict[str, float] = {}
    try:
        wait_for(lambda: "connected to the broker" in log.read_text(), 30)
        with psycopg.connect(dsn) as conn:
            conn.execute("SET synchronous_commit = on")
            start = time.monotonic()
            for tick, numbers in enumerate(paced(rate, seconds)):
                time.sleep(max(0.0, start + tick * 0.01 - time.monotonic()))
                rows = [event(n, subs - 1) for n in numbers]
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO outbox (transaction_id, asset_id, kind, charge_start_time,"
                        " payload) VALUES (%s, %s, %s, '2026-05-04T18:00:00Z', %s)",
                        [(tid, meter, kind, orjson.dumps(body).decode())
                         for tid, kind, meter, body in rows],
                    )  # fmt: skip
                conn.commit()
                now = time.time()
                committed.update((f"{tid}:{kind}", now) for tid, kind, _, _ in rows)
        wait_for(lambda: len(receiver.received) >= 2 * len(committed), 60)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        receiver.close()
    latencies = [at - committed[e] for (_, e), at in receiver.received.items()]
    return latencies, 2 * len(committed)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 10) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=1000, help="session events per second")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--flood", type=int, default=90_000, help="background measurements")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ev-bench-"))
    broker = MosquittoServer(work / "mosquitto")
    postgres = PostgresServer(server_directory("ev-bench-pg-"))
    broker.start()
    postgres.start()
    ingestor: subprocess.Popen[bytes] | None = None
    try:
        dsn = fresh_database(postgres.dsn(), "stream")
        env = {**os.environ, "INGEST_DATABASE_URL": dsn, "INGEST_MQTT__PORT": str(broker.port),
               "INGEST_METRICS_PORT": "0", "INGEST_CLIENT_ID": "bench-ingestor"}  # fmt: skip
        with (work / "ingestor.log").open("wb") as out:
            ingestor = subprocess.Popen([sys.executable, "-m", "ingestor", "run"], cwd=ROOT,
                                        env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        wait_for(lambda: "subscribed" in (work / "ingestor.log").read_text(), 30)
        floods = write_floods(work, args.flood // 2, 3)
        flood(broker.port, floods)
        floor = run_floor(broker.port, args.rate, args.seconds, args.subscriptions - 1)
        flood(broker.port, floods)
        ours, expected = run_streamer(
            broker.port, dsn, rate=args.rate, seconds=args.seconds, subs=args.subscriptions,
            work=work,
        )  # fmt: skip
    finally:
        if ingestor is not None:
            ingestor.terminate()
            ingestor.wait(timeout=30)
        broker.stop()
        postgres.stop(mode="immediate")
        shutil.rmtree(postgres.directory, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.rate} session events/s for {args.seconds:g} s, {args.subscriptions} subs.,"
          f" under a flood of {args.flood} measurements through the ingestor")  # fmt: skip
    print(f"{'path':<34}{'deliveries':>11}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, values, wanted in (
        ("broker floor (publish->receipt)", floor, len(floor)),
        ("streamer (commit->receipt)", ours, expected),
    ):
        print(f"{name:<34}{len(values):>5}/{wanted:<5}{percentile(values, 50) * 1000:>9.1f}"
              f"{percentile(values, 99) * 1000:>9.1f}{max(values) * 1000:>9.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
