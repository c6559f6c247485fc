"""The whole pipeline as real processes: simulated gateways (edge agents) -> Mosquitto ->
ingestor -> PostgreSQL -> streamer -> a subscriber and the on-demand API; once clean and once
under faults (broker restarted, ingestor and streamer SIGKILLed and restarted, a gateway offline
then replaying its queue, the database restarted).

The expected sessions are what the (deterministic) detector makes of the very readings the
gateways simulate, computed here with the detector itself: every one must reach the subscriber
as exactly one start and one end (after de-duplication by event id), the database and the
on-demand API, with the same values everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from edge_agent.agent import EdgeAgent
from edge_agent.detector import MeterDetector, Transition
from edge_agent.metrics import EdgeMetrics
from edge_agent.offline import read_file
from edge_agent.service import SHARED_DATA
from edge_agent.simulator import HouseholdSpec, load_real_data, simulate_household
from edge_agent.sources import build_fleet, simulated_fleet
from edge_agent.store import TRANSACTION, AgentStore
from ingestor.registry import load as load_registry
from runtime.demo import gateway_env, sample_registry
from runtime.localservers import MosquittoServer, PostgresServer, free_port
from runtime.migrations import migrate
from schemas.pleevi import TransactionState
from schemas.subscriptions import SubscriptionRequest
from schemas.timefmt import format_utc
from streamer import subscriptions
from streamer.credentials import mosquitto_hash
from tests.integration.services import (
    ROOT,
    EventCollector,
    ServiceProcess,
    TcpRelay,
    ingestor_env,
    make_certificates,
    streamer_env,
    wait_until,
)

pytestmark = pytest.mark.integration

GATEWAYS = 2
PER_GATEWAY = 6
DAYS = 2
PREFIX = "ev/v1"


@dataclass(frozen=True)
class Expected:
    started: Transition
    ended: Transition | None
    """None: still charging when the simulated days end (a start message, no end)."""


def expected_sessions(start: datetime) -> dict[str, Expected]:
    """Every session the gateways' detectors start, from the same simulated readings."""
    real = load_real_data(SHARED_DATA)
    found: dict[str, Expected] = {}
    for k in range(GATEWAYS):
        fleet = build_fleet(PER_GATEWAY, days=DAYS, resolution_s=60, seed=k * PER_GATEWAY,
                            real=real, start=start)  # fmt: skip
        detectors: dict[str, MeterDetector] = {}
        started: dict[str, Transition] = {}
        for asset, t, power, energy in simulated_fleet(fleet):
            detector = detectors.setdefault(asset, MeterDetector(asset, warms_up=True))
            for tr in detector.update(t, power, energy):
                if tr.state is TransactionState.STARTED:
                    started[tr.transaction_id] = tr
                    found[tr.transaction_id] = Expected(tr, None)
                elif tr.state is TransactionState.ENDED:
                    found[tr.transaction_id] = Expected(started[tr.transaction_id], tr)
    return found


def utc(epoch: float) -> str:
    return format_utc(datetime.fromtimestamp(epoch, UTC))


@dataclass(frozen=True)
class Security:
    """TLS with a generated CA, a password per user, and the production ACL
    (deploy/mosquitto/acl) kept current with the subscribers by the streamer."""

    directory: Path
    certs: dict[str, Path]
    passwords: dict[str, str]

    def mqtt(self, env_prefix: str, user: str) -> dict[str, str]:
        return {f"{env_prefix}MQTT__TLS_CA": str(self.certs["ca.crt"]),
                f"{env_prefix}MQTT__USERNAME": user,
                f"{env_prefix}MQTT__PASSWORD": self.passwords[user]}  # fmt: skip


class Pipeline:
    def __init__(
        self,
        broker: MosquittoServer,
        postgres: PostgresServer,
        logs: Path,
        speed: float,
        *,
        security: Security | None = None,
        gateways: list[dict[str, str]] | None = None,
    ) -> None:
        """``gateways``: each gateway's own settings (default: ``GATEWAYS`` simulating
        ``PER_GATEWAY`` meters each over ``DAYS`` days from ``self.start``)."""
        self.broker, self.postgres, self.logs = broker, postgres, logs
        self.dsn = postgres.dsn()
        self.start = (datetime.now(UTC) - timedelta(days=DAYS + 1)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        migrate(self.dsn)
        with psycopg.connect(self.dsn) as conn:
            load_registry(conn, sample_registry(GATEWAYS * PER_GATEWAY), source="e2e")
            issued = subscriptions.issue_credentials(conn, "e2e")
            self.subscription = subscriptions.create(conn, "e2e", SubscriptionRequest())
        self.token = issued.api_token
        self.http_port = free_port()
        ingest = ingestor_env(dsn=self.dsn, port=broker.port, prefix=PREFIX,
                              client_id="e2e-ingestor")  # fmt: skip
        stream = streamer_env(dsn=self.dsn, port=broker.port, prefix=PREFIX,
                              http_port=self.http_port)  # fmt: skip
        stream["STREAM_EXPORT_DIR"] = str(logs / "exports")
        if security is not None:
            ingest |= security.mqtt("INGEST_", "ingestor")
            stream |= security.mqtt("STREAM_", "streamer") | {
                "STREAM_BROKER_FILES__PASSWD": str(security.directory / "passwd"),
                "STREAM_BROKER_FILES__ACL": str(security.directory / "acl"),
                "STREAM_BROKER_FILES__BASE_PASSWD": str(security.directory / "base-passwd"),
                "STREAM_BROKER_FILES__RELOAD_PIDFILE": str(security.directory / "broker.pid"),
            }
        self.ingestor = self.service("ingestor", ingest)
        self.streamer = self.service("streamer", stream)
        if security is not None:
            passwd = security.directory / "passwd"
            wait_until(lambda: "sub-e2e" in passwd.read_text(), timeout=30,
                       what="the streamer to add the subscriber to the broker")  # fmt: skip
            time.sleep(0.5)  # the broker rereads its files on SIGHUP
        self.subscriber = EventCollector(
            broker.port, [self.subscription.topic], client_id="e2e-subscriber", persistent=True,
            username=issued.broker_username if security else None,
            password=issued.broker_password if security else None,
            tls_ca=security.certs["ca.crt"] if security else None,
        )  # fmt: skip
        wait_until(self.subscriber.subscribed, timeout=10, what="the subscriber")
        if gateways is None:
            gateways = [
                gateway_env(k, per=PER_GATEWAY, port=0, days=DAYS, speed=speed, run_dir=logs)
                | {"EDGE_SIMULATOR_START": self.start.isoformat()}
                for k in range(GATEWAYS)
            ]
        self.relays = [TcpRelay(broker.port) for _ in gateways]
        self.gateways = []
        for k, (relay, settings) in enumerate(zip(self.relays, gateways, strict=True)):
            env = settings | {"EDGE_MQTT__PORT": str(relay.port)}
            if security is not None:
                env |= security.mqtt("EDGE_", f"site-{k}")
                if k == 0:  # client certificates are optional; gateway 0 presents one
                    env |= {"EDGE_MQTT__TLS_CERT": str(security.certs["client.crt"]),
                            "EDGE_MQTT__TLS_KEY": str(security.certs["client.key"])}  # fmt: skip
            self.gateways.append(self.service(f"gw-{k}", env, module="edge_agent"))

    def service(self, name: str, env: dict[str, str], module: str | None = None) -> ServiceProcess:
        return ServiceProcess(module or name, env, self.logs / f"{name}.log").start()

    def restart(self, process: ServiceProcess) -> None:
        process.kill()
        process.start()

    def delivered(self) -> dict[str, list[dict[str, Any]]]:
        """Event id -> every copy received."""
        copies: dict[str, list[dict[str, Any]]] = {}
        for _, events, props in list(self.subscriber.messages):
            ids = [value for key, value in props if key == "event-id"]
            for event_id, event in zip(ids, events, strict=True):
                copies.setdefault(event_id, []).append(event)
        return copies

    def on_demand(self) -> list[dict[str, Any]]:
        path = f"/dpss/api/v1/subscriptions/{self.subscription.subscription_id}/on-demand"
        records: list[dict[str, Any]] = []
        token = None
        with httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=30,
                          headers={"Authorization": f"Bearer {self.token}"}) as api:  # fmt: skip
            while True:
                response = api.post(path, json={"PageToken": token} if token else {})
                assert response.status_code == 200, response.text
                records += response.json()
                token = response.headers.get("Next-Page-Token")
                if token is None:
                    return records

    def stop(self) -> None:
        for process in [*self.gateways, self.streamer, self.ingestor]:
            if process.proc is not None:
                process.stop()
        for relay in self.relays:
            relay.close()
        self.subscriber.close()


def check_everything_arrived(pipeline: Pipeline, expected: dict[str, Expected]) -> None:
    ended = {tid: e.ended for tid, e in expected.items() if e.ended is not None}
    ids = {f"{tid}:start" for tid in expected} | {f"{tid}:end" for tid in ended}
    wait_until(lambda: ids <= set(pipeline.delivered()), timeout=180,
               what="every expected start and end at the subscriber")  # fmt: skip
    time.sleep(1)  # anything else in flight arrives too
    delivered = pipeline.delivered()
    assert set(delivered) == ids, "only the detected sessions, nothing invented"
    for copies in delivered.values():
        assert all(copy == copies[0] for copy in copies), "a redelivery is the same message"
    with psycopg.connect(pipeline.dsn) as conn:
        rows = conn.execute(
            "SELECT transaction_id, charge_start_time, charge_end_time, charge_w, start_power_w,"
            " charge_duration_h, charge_energy_wh, meter_id, transformer_id, status"
            " FROM charging_events WHERE charge_end_time IS NOT NULL"
        ).fetchall()
        open_sessions = conn.execute(
            "SELECT count(*) FROM charging_events WHERE charge_end_time IS NULL"
        ).fetchone()
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    assert dead == (0,)
    assert open_sessions == (len(expected) - len(ended),)
    stored = {row[0]: row for row in rows}
    assert set(stored) == set(ended)
    on_demand = {(r["MeterId"], r["ChargeStartTime"]): r for r in pipeline.on_demand()}
    assert len(on_demand) == len(ended)
    for tid, tr in ended.items():
        started = expected[tid].started
        (_, start, end, peak, start_w, duration, energy, meter, transformer, status) = stored[tid]
        assert status == "closed"
        assert (format_utc(start), format_utc(end)) == (utc(tr.start_time),
                                                        utc(tr.stop_time or 0))  # fmt: skip
        assert peak == tr.ev_peak_power_w
        assert start_w == max(started.ev_peak_power_w, started.ev_power_w)
        assert energy == tr.ev_energy_wh
        assert duration == pytest.approx(tr.duration_h, abs=1e-9)
        assert meter == tr.asset_id
        first = delivered[f"{tid}:start"][0]
        last = delivered[f"{tid}:end"][0]
        assert (first["MeterID"], first["TransformerID"]) == (meter, transformer)
        assert first["ChargeStartTime"] == utc(tr.start_time)
        assert first["ChargeW"] == start_w
        assert first["ChargeEndTime"] is None
        assert last["ChargeEndTime"] == utc(tr.stop_time or 0)
        assert last["ChargeEnergy"] == energy
        assert last["ChargeDuration"] == pytest.approx(duration, abs=1e-9)
        record = on_demand[(meter, utc(tr.start_time))]
        assert record["ChargeEndTime"] == utc(tr.stop_time or 0)
        assert (record["ChargeW"], record["ChargeEnergy"]) == (peak, energy)
        assert record["ChargeDuration"] == pytest.approx(duration, abs=1e-9)
        assert record["TransformerId"] == transformer


@pytest.fixture
def pipeline_factory(
    tmp_path: Path,
    private_broker: Callable[..., MosquittoServer],
    private_postgres: Callable[[], PostgresServer],
) -> Any:
    made: list[Pipeline] = []

    def make(speed: float) -> Pipeline:
        broker = private_broker(persistence=True)
        pipeline = Pipeline(broker, private_postgres(), tmp_path, speed)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.stop()


def test_every_detected_session_arrives_once_everywhere(pipeline_factory: Any) -> None:
    pipeline = pipeline_factory(speed=0)
    expected = expected_sessions(pipeline.start)
    assert len(expected) >= 10, "the fleet charges enough to prove something"
    for gateway in pipeline.gateways:
        assert gateway.proc is not None
        assert gateway.proc.wait(timeout=120) == 0, gateway.log()[-2000:]
    check_everything_arrived(pipeline, expected)


def test_nothing_lost_or_doubled_under_faults(pipeline_factory: Any) -> None:
    """Faults while the gateways stream 2 simulated days over about 25 s."""
    pipeline = pipeline_factory(speed=DAYS * 86400 / 25)
    expected = expected_sessions(pipeline.start)
    steps: list[tuple[float, str, Callable[[], None]]] = [
        (3, "broker restarted", pipeline.broker.restart),
        (6, "ingestor SIGKILLed and restarted", lambda: pipeline.restart(pipeline.ingestor)),
        (8, "gateway 1 offline", pipeline.relays[1].cut),
        (11, "streamer SIGKILLed and restarted", lambda: pipeline.restart(pipeline.streamer)),
        (14, "database restarted", pipeline.postgres.restart),
        (18, "ingestor SIGKILLed again", lambda: pipeline.restart(pipeline.ingestor)),
        (22, "gateway 1 back online, replaying its queue", pipeline.relays[1].restore),
    ]
    began = time.monotonic()
    for at, _what, fault in steps:
        time.sleep(max(0.0, began + at - time.monotonic()))
        fault()
    assert any(g.proc is not None and g.proc.poll() is None for g in pipeline.gateways), (
        "the faults happened while the gateways were still streaming"
    )
    for gateway in pipeline.gateways:
        assert gateway.proc is not None
        assert gateway.proc.wait(timeout=180) == 0, gateway.log()[-2000:]
    check_everything_arrived(pipeline, expected)
    offline = pipeline.gateways[1].log()
    assert offline.count("disconnected from broker") >= 2  # the broker restart, the outage
    assert "queue drained=True, 0 messages left" in offline


def test_the_pipeline_runs_over_tls_with_passwords_and_the_production_acl(
    tmp_path: Path,
    private_broker: Callable[..., MosquittoServer],
    private_postgres: Callable[[], PostgresServer],
) -> None:
    """Every client (gateways, ingestor, streamer, subscriber) over TLS with its own password;
    the broker refuses anonymous clients and applies deploy/mosquitto/acl."""
    files = tmp_path / "broker"
    certs = make_certificates(files / "certs")
    users = ["ingestor", "streamer", *(f"site-{k}" for k in range(GATEWAYS))]
    security = Security(files, certs, {user: f"{user}-secret" for user in users})
    base = "".join(f"{u}:{mosquitto_hash(p)}\n" for u, p in security.passwords.items())
    (files / "base-passwd").write_text(base)
    (files / "passwd").write_text(base)
    (files / "acl").write_text((ROOT / "deploy" / "mosquitto" / "acl").read_text())
    port = free_port()
    broker = private_broker(port=port, extra_conf=[
        f"listener {port} 127.0.0.1", f"cafile {certs['ca.crt']}",
        f"certfile {certs['server.crt']}", f"keyfile {certs['server.key']}",
        "require_certificate false", "allow_anonymous false",
        f"password_file {files / 'passwd'}", f"acl_file {files / 'acl'}",
    ])  # fmt: skip
    assert broker._process is not None
    (files / "broker.pid").write_text(str(broker._process.pid))
    plain = EventCollector(port, ["#"])
    pipeline = Pipeline(broker, private_postgres(), tmp_path, speed=0, security=security)
    try:
        expected = expected_sessions(pipeline.start)
        for gateway in pipeline.gateways:
            assert gateway.proc is not None
            assert gateway.proc.wait(timeout=120) == 0, gateway.log()[-2000:]
        check_everything_arrived(pipeline, expected)
        assert plain.messages == [], "a client without TLS gets nothing"
    finally:
        pipeline.stop()
        plain.close()


def queued_transactions(readings: list[Any], store: Path) -> list[dict[str, Any]]:
    """The transaction messages an agent (the same code as the gateway's) queues for
    ``readings``, in order."""
    agent_store = AgentStore(store)
    try:
        agent = EdgeAgent(site_id="expected", store=agent_store,
                          metrics=EdgeMetrics(CollectorRegistry()))  # fmt: skip
        agent.process(readings)
        queued = agent_store.pending(0, 1_000_000)
    finally:
        agent_store.close()
    return [orjson.loads(q.payload) for q in queued if q.kind == TRANSACTION]


def test_a_late_session_from_the_second_look_arrives_whole_everywhere(
    tmp_path: Path,
    private_broker: Callable[..., MosquittoServer],
    private_postgres: Callable[[], PostgresServer],
) -> None:
    """Ten hot days of a house replayed by a gateway whose second look sends, days late, a
    charge its live detector missed: the ingestor pairs it, and the subscriber, the database
    and the on-demand API get it as any other session (start and end once each, closed, not
    flagged). Which order its messages need is tested in test_ingestor."""
    start = (datetime.now(UTC) - timedelta(days=11)).replace(hour=0, minute=0, second=0,
                                                             microsecond=0)  # fmt: skip
    spec = HouseholdSpec(days=10, hot_days=True, abrupt_ends=True, start=start)
    trace = simulate_household(10, spec, asset_id="meter-00010").resample(60)
    replay = tmp_path / "hot.jsonl"
    with replay.open("wb") as out:
        for asset, t, p, e in trace.readings():
            out.write(orjson.dumps({"assetId": asset, "timestamp": utc(t), "energyValue": e,
                                    "powerValue": p}) + b"\n")  # fmt: skip
    readings = list(read_file(replay))
    sent = queued_transactions(readings, tmp_path / "expected.sqlite3")
    ended = {m["transactionId"]: m for m in sent if m["transactionState"] == "Ended"}
    live = MeterDetector("meter-00010", warms_up=True)
    live_ids = {tr.transaction_id for _, t, p, e in readings for tr in live.update(t, p, e)}
    late = set(ended) - live_ids
    assert late, "the second look sends a session the live detector missed"
    assert len(ended) > len(late), "and the live detector its own"

    gateway = {
        "EDGE_SITE_ID": "site-0", "EDGE_GATEWAY_ID": "gw-0", "EDGE_SOURCE": "file",
        "EDGE_INPUT": str(replay), "EDGE_SPEED": "0", "EDGE_METRICS_PORT": "0",
        "EDGE_STORE_PATH": str(tmp_path / "edge" / "gw-0.sqlite3"),
    }  # fmt: skip
    pipeline = Pipeline(private_broker(), private_postgres(), tmp_path, 0, gateways=[gateway])
    try:
        [agent] = pipeline.gateways
        assert agent.proc is not None
        assert agent.proc.wait(timeout=180) == 0, agent.log()[-2000:]
        ids = {f"{tid}:{edge}" for tid in ended for edge in ("start", "end")}
        wait_until(lambda: ids <= set(pipeline.delivered()), timeout=120,
                   what="every session's start and end at the subscriber")  # fmt: skip
        time.sleep(1)  # anything else in flight arrives too
        delivered = pipeline.delivered()
        opened = {f"{m['transactionId']}:start" for m in sent} - {f"{t}:start" for t in ended}
        assert set(delivered) == ids | opened
        with psycopg.connect(pipeline.dsn) as conn:
            rows = conn.execute(
                "SELECT transaction_id, charge_start_time, charge_end_time, charge_energy_wh,"
                " status, flags FROM charging_events WHERE charge_end_time IS NOT NULL"
            ).fetchall()
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        assert dead == (0,)
        stored = {row[0]: row for row in rows}
        assert set(stored) == set(ended)
        on_demand = {r["ChargeStartTime"]: r for r in pipeline.on_demand()}
        for tid, m in ended.items():
            _, begun, stopped, energy, status, flags = stored[tid]
            assert (status, flags) == ("closed", []), tid  # paired, never timed out
            assert (format_utc(begun), format_utc(stopped)) == (m["startTime"], m["stopTime"])
            assert energy == m["evEnergy"]
            [first] = {orjson.dumps(c) for c in delivered[f"{tid}:start"]}  # copies the same
            [last] = {orjson.dumps(c) for c in delivered[f"{tid}:end"]}
            assert orjson.loads(first)["ChargeStartTime"] == m["startTime"]
            assert orjson.loads(last)["ChargeEndTime"] == m["stopTime"]
            assert on_demand[m["startTime"]]["ChargeEndTime"] == m["stopTime"]
    finally:
        pipeline.stop()
