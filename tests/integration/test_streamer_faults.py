"""The streamer under faults (SIGKILL, broker restart), as two replicas, and with subscriber
credentials confined by a generated Mosquitto password file and ACL."""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from runtime.localservers import MosquittoServer, free_port
from runtime.migrations import migrate
from schemas.itron import EntityType
from schemas.subscriptions import SubscriptionRequest
from streamer import subscriptions
from streamer.credentials import broker_username, mosquitto_hash
from tests.conftest import BrokerAddress
from tests.integration.services import (
    EventCollector,
    ServiceProcess,
    scrape,
    streamer_env,
    unique_prefix,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def migrated_db(fresh_db: str) -> str:
    migrate(fresh_db)
    return fresh_db


@pytest.fixture
def start_streamer(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start(name: str = "streamer", **env: str) -> ServiceProcess:
        process = ServiceProcess("streamer", env, tmp_path / f"{name}.log").start()
        started.append(process)
        wait_until(lambda: "connected to the broker" in process.log(), timeout=30,
                   what=f"{name} to connect")  # fmt: skip
        return process

    yield start
    for process in started:
        process.stop()


def subscribe_everything(dsn: str, prefix: str, subscriber: str = "adms") -> str:
    """A catch-all subscription; its topic."""
    with psycopg.connect(dsn) as conn:
        subscriptions.issue_credentials(conn, subscriber)
        view = subscriptions.create(conn, subscriber, SubscriptionRequest(), prefix=prefix)
    return view.topic


def write_outbox(
    dsn: str, sessions: list[tuple[str, str]], *, per_commit: int = 20, pause_s: float = 0
) -> None:
    """Start and end rows as the ingestor writes them, in small committed transactions."""
    with psycopg.connect(dsn, autocommit=False) as conn:
        for n, (tid, meter) in enumerate(sessions, start=1):
            for kind in ("start", "end"):
                event = {
                    "ServicePointID": f"SP-{meter}", "MeterID": meter, "MeterNumber": None,
                    "ESN": None, "TransformerID": "XF-1", "PremiseID": None,
                    "ReceivedTime": "2026-05-04T18:00:05Z",
                    "ChargeStartTime": "2026-05-04T18:00:00Z" if kind == "start" else None,
                    "ChargeEndTime": None if kind == "start" else "2026-05-04T20:00:00Z",
                    "ChargeW": 7200.0 if kind == "start" else None,
                    "ChargeDuration": None if kind == "start" else 2.0,
                    "ChargeEnergy": None if kind == "start" else 14400.0,
                }  # fmt: skip
                conn.execute(
                    "INSERT INTO outbox (transaction_id, asset_id, kind, charge_start_time,"
                    " payload) VALUES (%s, %s, %s, '2026-05-04T18:00:00Z', %s)",
                    (tid, meter, kind, orjson.dumps(event).decode()),
                )
            if n % per_commit == 0:
                conn.commit()
                time.sleep(pause_s)
        conn.commit()


def outbox_order(dsn: str) -> dict[str, list[str]]:
    """Event ids per meter in outbox order."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT asset_id, transaction_id || ':' || kind FROM outbox ORDER BY id"
        ).fetchall()
    order: dict[str, list[str]] = defaultdict(list)
    for meter, event_id in rows:
        order[meter].append(event_id)
    return order


def first_arrivals(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def assert_in_order_per_meter(arrived: list[str], order: dict[str, list[str]]) -> None:
    rank = {event_id: i for events in order.values() for i, event_id in enumerate(events)}
    meter_of = {event_id: m for m, events in order.items() for event_id in events}
    per_meter: dict[str, list[int]] = defaultdict(list)
    for event_id in first_arrivals(arrived):
        per_meter[meter_of[event_id]].append(rank[event_id])
    for meter, ranks in per_meter.items():
        assert ranks == sorted(ranks), f"meter {meter} out of order"


def pending(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()
    return int(row[0]) if row else -1


def test_killing_the_streamer_and_restarting_the_broker_lose_nothing(
    migrated_db: str,
    private_broker: Callable[..., MosquittoServer],
    start_streamer: Callable[..., ServiceProcess],
) -> None:
    broker = private_broker(persistence=True)
    prefix = unique_prefix()
    topic = subscribe_everything(migrated_db, prefix)
    collector = EventCollector(broker.port, [topic], client_id="dso-adms", persistent=True)
    wait_until(collector.subscribed, timeout=10, what="SUBACK")
    env = streamer_env(dsn=migrated_db, port=broker.port, prefix=prefix, http_port=free_port(),
                       STREAM_BATCH_SIZE="100", STREAM_ACK_TIMEOUT_S="2")  # fmt: skip
    streamer = start_streamer("first", **env)

    sessions = [(f"s-{n}", f"m-{n % 25}") for n in range(1500)]
    writer = threading.Thread(
        target=write_outbox, args=(migrated_db, sessions), kwargs={"pause_s": 0.08}, daemon=True
    )
    writer.start()
    wait_until(lambda: len(collector.event_ids()) > 300, timeout=30, what="deliveries to begin")
    streamer.kill()
    killed_at = len(set(collector.event_ids()))
    streamer = start_streamer("second", **env)
    wait_until(lambda: len(set(collector.event_ids())) > killed_at + 300, timeout=30,
               what="deliveries to resume")  # fmt: skip
    broker.restart()
    assert writer.is_alive(), "the faults must hit a running stream"
    writer.join(timeout=120)
    wait_until(lambda: pending(migrated_db) == 0, timeout=90, what="an empty outbox backlog")
    expected = {f"{tid}:{kind}" for tid, _ in sessions for kind in ("start", "end")}
    wait_until(lambda: set(collector.event_ids()) >= expected, timeout=60,
               what="every event at the subscriber")  # fmt: skip
    arrived = collector.event_ids()
    assert set(arrived) == expected, "nothing lost, nothing foreign"
    assert_in_order_per_meter(arrived, outbox_order(migrated_db))
    duplicates = len(arrived) - len(expected)
    assert duplicates <= 2 * 100 * 2, "at most the batches in flight at the two faults"
    assert "disconnected from the broker" in streamer.log()  # the restart was really felt
    collector.close()


def test_two_replicas_deliver_each_row_once_and_in_order_per_meter(
    migrated_db: str, broker: BrokerAddress, start_streamer: Callable[..., ServiceProcess]
) -> None:
    prefix = unique_prefix()
    topic = subscribe_everything(migrated_db, prefix)
    collector = EventCollector(broker.port, [topic])
    wait_until(collector.subscribed, timeout=10, what="SUBACK")
    replicas = [
        start_streamer(
            name,
            **streamer_env(
                dsn=migrated_db,
                port=broker.port,
                prefix=prefix,
                http_port=free_port(),
                client_id=name,
                STREAM_BATCH_SIZE="40",
            ),
        )
        for name in ("replica-a", "replica-b")
    ]
    sessions = [(f"r-{n}", f"m-{n % 40}") for n in range(1500)]
    write_outbox(migrated_db, sessions, per_commit=150)
    expected = {f"{tid}:{kind}" for tid, _ in sessions for kind in ("start", "end")}
    wait_until(lambda: len(collector.event_ids()) >= len(expected), timeout=60,
               what="every event")  # fmt: skip
    time.sleep(0.5)
    arrived = collector.event_ids()
    assert len(arrived) == len(set(arrived)) == len(expected), "each row delivered exactly once"
    assert set(arrived) == expected
    assert_in_order_per_meter(arrived, outbox_order(migrated_db))
    shares = [
        sum(
            v
            for k, v in scrape(p.metrics_url()).items()
            if k.startswith("ev_stream_outbox_rows_total")
        )
        for p in replicas
    ]
    assert sum(shares) == len(expected)
    assert all(share > 0 for share in shares), f"both replicas worked: {shares}"
    collector.close()


def test_a_subscriber_can_read_only_its_own_subscription_topics(
    migrated_db: str,
    private_broker: Callable[..., MosquittoServer],
    start_streamer: Callable[..., ServiceProcess],
    tmp_path: Path,
) -> None:
    prefix = "ev/v1"
    passwd, acl, base = tmp_path / "passwd", tmp_path / "acl", tmp_path / "base-passwd"
    base.write_text(f"streamer:{mosquitto_hash('streamer-secret')}\n")
    acl_base = tmp_path / "base-acl"
    acl_base.write_text("user streamer\ntopic write ev/v1/subscriptions/+/events\n")
    passwd.write_text(base.read_text())
    acl.write_text(acl_base.read_text())
    broker = private_broker(
        extra_conf=["allow_anonymous false", f"password_file {passwd}", f"acl_file {acl}"]
    )
    pidfile = tmp_path / "mosquitto.pid"
    assert broker._process is not None
    pidfile.write_text(str(broker._process.pid))
    start_streamer(
        **streamer_env(dsn=migrated_db, port=broker.port, prefix=prefix, http_port=free_port()),
        STREAM_MQTT__USERNAME="streamer",
        STREAM_MQTT__PASSWORD="streamer-secret",
        STREAM_BROKER_FILES__PASSWD=str(passwd),
        STREAM_BROKER_FILES__ACL=str(acl),
        STREAM_BROKER_FILES__BASE_PASSWD=str(base),
        STREAM_BROKER_FILES__BASE_ACL=str(acl_base),
        STREAM_BROKER_FILES__RELOAD_PIDFILE=str(pidfile),
    )
    with psycopg.connect(migrated_db) as conn:
        alice = subscriptions.issue_credentials(conn, "alice")
        bob = subscriptions.issue_credentials(conn, "bob")
        by_meter = SubscriptionRequest(EntityType=EntityType.METER, EntityId=["m-1"])
        alice_topic = subscriptions.create(conn, "alice", by_meter, prefix=prefix).topic
        bob_topic = subscriptions.create(conn, "bob", by_meter, prefix=prefix).topic
    wait_until(lambda: broker_username("bob") in acl.read_text() and bob_topic in acl.read_text(),
               timeout=15, what="the streamer to write the broker files")  # fmt: skip
    time.sleep(0.5)  # the broker reloads on SIGHUP

    intruder = EventCollector(
        broker.port, [alice_topic, bob_topic, f"{prefix}/subscriptions/+/events", "#"],
        username=alice.broker_username, password=alice.broker_password,
    )  # fmt: skip
    owner = EventCollector(
        broker.port, [bob_topic], username=bob.broker_username, password=bob.broker_password
    )
    wrong = EventCollector(broker.port, [], username=bob.broker_username, password="guess")
    try:
        wait_until(lambda: intruder.subscribed() and owner.subscribed(), timeout=10, what="SUBACKs")
        # Mosquitto 2 grants any subscription and enforces the ACL per delivered message, so
        # the proof is in what arrives, below.
        wait_until(lambda: wrong.refused, timeout=10, what="a wrong password to be refused")
        write_outbox(migrated_db, [("conf-1", "m-1")])
        wait_until(lambda: len(owner.event_ids()) == 2, timeout=30, what="bob's events")
        wait_until(lambda: len(set(intruder.event_ids())) == 2, timeout=30, what="alice's events")
        # alice tries to inject into bob's topic: her ACL has no write, so it never arrives
        injector = EventCollector(
            broker.port, [], username=alice.broker_username, password=alice.broker_password
        )
        injector.client.publish(bob_topic, b'{"EVChargingEvents": []}', qos=1)
        time.sleep(1.0)
        injector.close()
        assert {t for t, _, _ in intruder.messages} == {alice_topic}, "alice saw only her topic"
        assert {t for t, _, _ in owner.messages} == {bob_topic}
        assert all(events for _, events, _ in owner.messages), "no injected message reached bob"
    finally:
        for client in (intruder, owner, wrong):
            client.close()


def test_delivered_outbox_rows_are_swept_after_the_keep_period(
    migrated_db: str,
    broker: BrokerAddress,
    start_streamer: Callable[..., ServiceProcess],
) -> None:
    """Delivered rows older than STREAM_OUTBOX_KEEP_DAYS go; pending ones never do."""
    prefix = unique_prefix()
    subscribe_everything(migrated_db, prefix)
    write_outbox(migrated_db, [("old-1", "m-1"), ("new-1", "m-2")])
    with psycopg.connect(migrated_db) as conn:
        conn.execute("INSERT INTO outbox (transaction_id, asset_id, kind, charge_start_time,"
                     " payload, delivered_at) VALUES ('aged', 'm-3', 'start', now(), '{}',"
                     " now() - interval '2 days')")  # fmt: skip
    start_streamer(**streamer_env(dsn=migrated_db, port=broker.port, prefix=prefix,
                                  http_port=free_port(), STREAM_OUTBOX_KEEP_DAYS="1"))  # fmt: skip
    wait_until(lambda: pending(migrated_db) == 0, timeout=30, what="delivery")

    def left() -> list[str]:
        with psycopg.connect(migrated_db) as conn:
            return [tid for (tid,) in conn.execute("SELECT transaction_id FROM outbox")]

    wait_until(lambda: "aged" not in left(), timeout=30, what="the sweep")
    assert sorted(left()) == ["new-1", "new-1", "old-1", "old-1"]


def test_a_streamer_whose_api_cannot_listen_exits_with_an_error(
    broker: BrokerAddress, migrated_db: str, tmp_path: Path
) -> None:
    """A port already taken stops the streamer (exit 1) instead of leaving it running
    without its API, where it would look alive to the broker and dead to every client."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = streamer_env(dsn=migrated_db, port=broker.port, prefix=unique_prefix(),
                           http_port=taken.getsockname()[1])  # fmt: skip
        streamer = ServiceProcess("streamer", env, tmp_path / "streamer.log").start()
        assert streamer.proc is not None
        assert streamer.proc.wait(timeout=60) == 1
    assert "the HTTP API could not listen" in streamer.log()
