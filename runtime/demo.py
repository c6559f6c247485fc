"""``./run``: the whole pipeline on embedded defaults, watched live.

A private Mosquitto and PostgreSQL (the system's binaries, data under ``.run/``, free loopback
ports), migrations, a sample meter registry, a data subscriber with a catch-all subscription,
the ingestor, the streamer, and simulated gateways (edge agents, each with its share of the
meters, in accelerated time). It prints the sessions as the subscriber receives them and a
progress line (detected at the edge, stored, delivered), then a summary with where the API,
metrics and subscriber topic are. Ctrl-C stops everything cleanly at any point.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from ingestor.registry import load as load_registry
from runtime.localservers import MosquittoServer, PostgresServer, free_port
from runtime.migrations import migrate
from runtime.processes import ROOT, ServiceProcess
from schemas.subscriptions import SubscriptionRequest
from schemas.topics import DEFAULT_PREFIX
from streamer import subscriptions

REGISTRY_HEADER = (
    "MeterId,MeterNumber,ElectronicSerialNumber,ServicePointId,PremiseId,TransformerId,"
    "FeederId,ValidFrom,ValidTo"
)
METERS_PER_TRANSFORMER = 8
METERS_PER_FEEDER = 100


def sample_registry(meters: int) -> list[str]:
    """CIS/MDMS/GIS-style rows for the simulator's meters ``meter-00000`` ...: eight meters per
    transformer, a hundred per feeder."""
    rows = [REGISTRY_HEADER]
    for i in range(meters):
        rows.append(
            f"meter-{i:05d},MN{i:07d},2.16.840.1.114416.15.80.{1000000 + i},SP{900000 + i},"
            f"P{900000 + i},XF-{i // METERS_PER_TRANSFORMER:04d},"
            f"FDR-{i // METERS_PER_FEEDER:02d},2020-01-01T00:00:00Z,"
        )
    return [row + "\n" for row in rows]


def gateway_env(
    k: int, *, per: int, port: int, days: int, speed: float, run_dir: Path
) -> dict[str, str]:
    """Gateway k simulates meters ``k * per`` .. ``k * per + per - 1`` (ending today)."""
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "EDGE_SITE_ID": f"site-{k}",
        "EDGE_GATEWAY_ID": f"gw-{k}",
        "EDGE_MQTT__PORT": str(port),
        "EDGE_STORE_PATH": str(run_dir / "edge" / f"gw-{k}.sqlite3"),
        "EDGE_SOURCE": "simulator",
        "EDGE_SIMULATOR_METERS": str(per),
        "EDGE_SIMULATOR_SEED": str(k * per),
        "EDGE_SIMULATOR_DAYS": str(days),
        "EDGE_SIMULATOR_START": (start - timedelta(days=days)).isoformat(),
        "EDGE_SPEED": str(speed),
        "EDGE_METRICS_PORT": "0",
    }


@dataclass
class Watcher:
    """What the edge detected (its transaction messages) and what the subscriber received."""

    detected: set[str] = field(default_factory=set)
    delivered: Counter[str] = field(default_factory=Counter)
    seen: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    quiet: bool = False

    def on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/transaction"):
            tx = orjson.loads(msg.payload)
            if tx.get("transactionState") == "Ended":
                with self.lock:
                    self.detected.add(tx["transactionId"])
            return
        props = getattr(msg.properties, "UserProperty", None) or []
        ids = [value for key, value in props if key == "event-id"]
        events = orjson.loads(msg.payload)["EVChargingEvents"]
        with self.lock:
            for event_id, event in zip(ids, events, strict=False):
                if event_id in self.seen:
                    continue  # at-least-once delivery: de-duplicate on the event id
                self.seen.add(event_id)
                kind = event_id.rsplit(":", 1)[-1]
                self.delivered[kind] += 1
                if kind == "end" and not self.quiet:
                    print(
                        f"  ended {event['ChargeEndTime']}  {event['MeterID']:<12} "
                        f"{event['TransformerID']:<8} {event['ChargeEnergy'] / 1000:6.1f} kWh "
                        f"over {event['ChargeDuration']:.1f} h",
                        flush=True,
                    )


def stored(dsn: str) -> tuple[int, int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE charge_end_time IS NOT NULL), count(*),"
            " (SELECT count(*) FROM dead_letters) FROM charging_events"
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--gateways", type=int, default=4)
    parser.add_argument("--days", type=int, default=2, help="simulated days, ending today")
    parser.add_argument("--speed", type=float, default=3600, help="x real time; 0 = flat out")
    parser.add_argument("--quiet", action="store_true", help="progress only, no session lines")
    parser.add_argument(
        "--keep-data", action="store_true", help="resume on the last run's data, not afresh"
    )
    stay = parser.add_mutually_exclusive_group()
    stay.add_argument(
        "--stay",
        dest="stay",
        action="store_true",
        default=None,
        help="keep serving after the fleet is done (default on a terminal)",
    )
    stay.add_argument("--exit", dest="stay", action="store_false")  # fmt: skip
    args = parser.parse_args(argv)
    stay_up = sys.stdin.isatty() if args.stay is None else args.stay
    run_dir = ROOT / ".run"
    if not args.keep_data:
        for part in ("postgres", "mosquitto", "edge", "exports", "logs"):
            shutil.rmtree(run_dir / part, ignore_errors=True)
    run_dir.mkdir(exist_ok=True)
    run_dir.chmod(0o755)  # the postgres user must reach its data directory below it
    (run_dir / "logs").mkdir(exist_ok=True)
    broker = MosquittoServer(run_dir / "mosquitto", persistence=True)
    postgres = PostgresServer(run_dir / "postgres")
    processes: list[ServiceProcess] = []
    watcher = Watcher(quiet=args.quiet)
    client: mqtt.Client | None = None
    try:
        broker.start()
        postgres.start()
        dsn = postgres.dsn()
        migrate(dsn)
        with psycopg.connect(dsn) as conn:
            report = load_registry(conn, sample_registry(args.meters), source="demo")
            issued = subscriptions.issue_credentials(conn, "demo")
            sub = subscriptions.create(conn, "demo", SubscriptionRequest())
        http_port = free_port()
        logs = run_dir / "logs"
        ingest_env = {"INGEST_DATABASE_URL": dsn, "INGEST_MQTT__PORT": str(broker.port),
                      "INGEST_METRICS_PORT": "0"}  # fmt: skip
        stream_env = {"STREAM_DATABASE_URL": dsn, "STREAM_MQTT__PORT": str(broker.port),
                      "STREAM_HTTP_PORT": str(http_port), "STREAM_METRICS_PORT": "0",
                      "STREAM_EXPORT_DIR": str(run_dir / "exports")}  # fmt: skip
        processes.append(ServiceProcess("ingestor", ingest_env, logs / "ingestor.log").start())
        processes.append(ServiceProcess("streamer", stream_env, logs / "streamer.log").start())
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-subscriber",
                             protocol=mqtt.MQTTv5)  # fmt: skip
        client.on_message = watcher.on_message
        client.on_connect = lambda c, *_: c.subscribe(
            [(sub.topic, 1), (f"{DEFAULT_PREFIX}/+/+/transaction", 1)]
        )
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        per = max(1, args.meters // args.gateways)
        gateways = [
            ServiceProcess("edge_agent", gateway_env(k, per=per, port=broker.port, days=args.days,
                           speed=args.speed, run_dir=run_dir), logs / f"gw-{k}.log").start()
            for k in range(args.gateways)
        ]  # fmt: skip
        processes.extend(gateways)
        api = f"http://127.0.0.1:{http_port}"
        print(f"""
pipeline    {args.gateways} simulated gateways x {per} meters, {args.days} days at {args.speed:g}x
broker      mqtt://127.0.0.1:{broker.port}   database {dsn}
registry    {report.added} meters loaded ({args.meters // METERS_PER_TRANSFORMER} transformers)
API         {api}/docs   (Authorization: Bearer {issued.api_token})
subscriber  topic {sub.topic}
            broker user {issued.broker_username} / {issued.broker_password}
metrics     {", ".join(p.metrics_url() for p in processes[:2])}
logs        {logs}
""", flush=True)  # fmt: skip
        watch(watcher, gateways, dsn)
        summary(api, issued.api_token, sub.subscription_id, dsn)
        if stay_up:
            print("\nserving; Ctrl-C stops everything", flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
    finally:
        for process in reversed(processes):
            if process.proc is not None:
                process.stop(timeout=30)
        if client is not None:
            client.loop_stop()
            client.disconnect()
        broker.stop()
        postgres.stop()
    return 0


def watch(watcher: Watcher, gateways: list[ServiceProcess], dsn: str) -> None:
    """Progress until the gateways are done and every detected session is delivered (or
    nothing has moved for a minute after they finished)."""
    last: tuple[int, ...] = ()
    still_since = time.monotonic()
    while True:
        time.sleep(2)
        running = sum(1 for g in gateways if g.proc is not None and g.proc.poll() is None)
        closed, events, dead = stored(dsn)
        with watcher.lock:
            detected, starts, ends = (len(watcher.detected), watcher.delivered["start"],
                                      watcher.delivered["end"])  # fmt: skip
        print(f"[gateways running {running}/{len(gateways)}] detected {detected} sessions |"
              f" stored {events} ({closed} ended) | delivered {starts} starts, {ends} ends |"
              f" dead letters {dead}", flush=True)  # fmt: skip
        now = (running, detected, events, closed, starts, ends)
        if now != last:
            last, still_since = now, time.monotonic()
        if running:
            continue
        if detected == closed == ends:
            return
        if time.monotonic() - still_since > 60:
            print("nothing has moved for 60 s and not everything arrived; see the logs")
            return


def summary(api: str, token: str, subscription_id: str, dsn: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{api}/dpss/api/v1/subscriptions/{subscription_id}"
    with httpx.Client(headers=headers, timeout=30) as http:
        page = http.post(f"{base}/on-demand", json={})
        job = http.post(f"{base}/batch-request", json={"filetype": "parquet"}).json()
        for _ in range(60):
            job = http.get(f"{base}/batch-request/{job['JobId']}").json()
            if job["Status"] in ("done", "failed"):
                break
            time.sleep(0.5)
    with psycopg.connect(dsn) as conn:
        busiest = conn.execute(
            "SELECT transformer_id, count(*), round(sum(charge_energy_wh) / 1000),"
            " round((max(charge_w) / 1000)::numeric, 1) FROM charging_events"
            " WHERE charge_end_time IS NOT NULL GROUP BY 1 ORDER BY 3 DESC NULLS LAST LIMIT 5"
        ).fetchall()
    print(f"\non-demand  POST {base}/on-demand -> {len(page.json())} events on the first page"
          f"{' (more: Next-Page-Token)' if 'Next-Page-Token' in page.headers else ''}")  # fmt: skip
    print(f"export     {job['Status']}: {job.get('RowCount')} events as Parquet,"
          f" GET {api}{job.get('Download')}")  # fmt: skip
    print("busiest transformers by EV energy:")
    for transformer, sessions, kwh, peak in busiest:
        print(f"  {transformer:<10} {sessions:>4} sessions {kwh:>7} kWh  peak {peak} kW")


if __name__ == "__main__":
    raise SystemExit(main())
