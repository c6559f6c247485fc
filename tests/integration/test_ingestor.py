"""The ingestor as a real process between a real Mosquitto and a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pytest

from runtime.localservers import MosquittoServer, PostgresServer
from runtime.migrations import migrate
from tests.conftest import BrokerAddress
from tests.integration.services import (
    ROOT,
    ServiceProcess,
    ingestor_env,
    measurement,
    publish_all,
    scrape,
    session,
    unique_prefix,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def start_ingestor(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start(**env: str) -> ServiceProcess:
        process = ServiceProcess(
            "ingestor", env, tmp_path / f"ingestor-{env['INGEST_CLIENT_ID']}.log"
        ).start()
        started.append(process)
        wait_until(lambda: "subscribed" in process.log(), timeout=30, what="the subscription")
        return process

    yield start
    for process in started:
        process.stop()


def count(dsn: str, sql: str, *params: object) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def wait_count(dsn: str, sql: str, expected: int, *, timeout: float, what: str) -> None:
    wait_until(lambda: count(dsn, sql) == expected, timeout=timeout, what=what)


def cli(dsn: str, *args: str, prefix: str = "ev/v1") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestor", *args],
        cwd=ROOT,
        env={
            "INGEST_DATABASE_URL": dsn,
            "INGEST_MQTT__TOPIC_PREFIX": prefix,
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sessions_pair_in_any_order_and_bad_input_is_dead_lettered(
    broker: BrokerAddress, fresh_db: str, start_ingestor: Callable[..., ServiceProcess]
) -> None:
    """Out-of-order, duplicated and replayed messages give one event with one start and one
    end in the outbox; each kind of bad input lands in dead_letters and the stream goes on."""
    prefix = unique_prefix()
    ingestor = start_ingestor(
        **ingestor_env(dsn=fresh_db, port=broker.port, prefix=prefix, client_id="ing-pairs")
    )
    whole = session(prefix, "m-1", "tx-1")
    ended_only = session(prefix, "m-2", "tx-2")[3]
    measurements = [measurement(prefix, "m-1", minute) for minute in range(50)]
    good = [whole[3], whole[1], *measurements, whole[0], whole[3], whole[2], ended_only]
    good += measurements[:10]  # redelivered copies
    bad = [
        (f"{prefix}/site-1/m-1/measurement", b"{broken"),
        (f"{prefix}/site-1/m-1/measurement", orjson.dumps({"assetId": "m-1"})),
        (f"{prefix}/site-1/m-1/measurement", measurement(prefix, "m-1", 1)[1][:-1] + b',"x":1}'),
        (f"{prefix}/site-1/m-9/measurement", measurement(prefix, "m-1", 1)[1]),
        (f"{prefix}/site-1/m-1/transaction", whole[0][1].replace(b"Started", b"Charging")),
        (
            f"{prefix}/site-1/m-1/measurement",
            measurement(prefix, "m-1", 1)[1].replace(b"+00:00", b""),
        ),
        (f"{prefix}/site-1/m-1/measurement", b" " * 70_000),
    ]
    publish_all(broker.port, good + bad)
    publish_all(broker.port, [whole[0]])  # an old message replayed after the session closed

    wait_count(
        fresh_db, "SELECT count(*) FROM dead_letters", len(bad), timeout=30, what="dead letters"
    )
    wait_count(
        fresh_db,
        "SELECT count(*) FROM charging_events WHERE status='closed'",
        2,
        timeout=30,
        what="two closed events",
    )
    assert count(fresh_db, "SELECT count(*) FROM measurements") == 50
    assert count(fresh_db, "SELECT count(*) FROM transaction_log") == 5
    with psycopg.connect(fresh_db) as conn:
        event = conn.execute(
            "SELECT charge_start_time, charge_end_time, charge_w, charge_duration_h,"
            " charge_energy_wh, status, saw_started, flags FROM charging_events"
            " WHERE transaction_id = 'tx-1'"
        ).fetchone()
        outbox = conn.execute(
            "SELECT transaction_id, kind, payload FROM outbox ORDER BY transaction_id, id"
        ).fetchall()
        reasons = [r for (r,) in conn.execute("SELECT reason FROM dead_letters ORDER BY id")]
    assert event is not None
    start, end, peak, hours, energy, status, saw_started, flags = event
    assert end - start == timedelta(hours=2)
    assert (peak, hours, energy, status, saw_started) == (7400, 2.0, 12000, "closed", True)
    assert flags == ["unknown_asset"]
    assert sorted((t, k) for t, k, _ in outbox) == [
        ("tx-1", "end"),
        ("tx-1", "start"),
        ("tx-2", "end"),
        ("tx-2", "start"),
    ]
    end_payload = next(p for t, k, p in outbox if (t, k) == ("tx-1", "end"))
    assert end_payload["ChargeEnergy"] == 12000
    assert end_payload["ChargeW"] is None
    assert end_payload["MeterID"] == "m-1"
    assert any("invalid JSON" in r for r in reasons)
    assert any("does not match the topic" in r for r in reasons)
    assert any("timezone" in r for r in reasons), reasons
    assert any("exceeds" in r for r in reasons)
    assert any("transactionState" in r for r in reasons)
    metrics = scrape(ingestor.metrics_url())
    with urllib.request.urlopen(ingestor.metrics_url(), timeout=5) as response:
        exposition = response.read()
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert metrics['ev_ingest_messages_total{kind="measurement",outcome="duplicate"}'] == 10
    assert metrics['ev_ingest_messages_total{kind="rejected",outcome="invalid"}'] == len(bad)
    assert metrics['ev_ingest_dead_letters_total{reason="schema"}'] >= 3

    listing = cli(fresh_db, "dead-letter", "list")
    assert listing.returncode == 0
    assert len(listing.stdout.strip().splitlines()) == len(bad)
    # A message an older version refused that is valid now: replay ingests it.
    later = measurement(prefix, "m-1", 500)
    with psycopg.connect(fresh_db) as conn:
        conn.execute(
            "INSERT INTO dead_letters (received_at, topic, payload, reason)"
            " VALUES (now(), %s, %s, 'refused by an older version')",
            later,
        )
    replayed = cli(fresh_db, "dead-letter", "replay", prefix=prefix)
    assert replayed.returncode == 0, replayed.stderr
    assert "ingested 1, still invalid 7" in replayed.stdout
    assert count(fresh_db, "SELECT count(*) FROM measurements") == 51
    assert count(fresh_db, "SELECT count(*) FROM dead_letters WHERE replay_count = 1") == 8


def test_registry_enriches_events_as_of_their_start(
    broker: BrokerAddress,
    fresh_db: str,
    start_ingestor: Callable[..., ServiceProcess],
    tmp_path: Path,
) -> None:
    """Events take the registry values valid at their start; an unknown meter is stored,
    flagged, and picks up its values when the registry arrives; loading twice is a no-op."""
    prefix = unique_prefix()
    start_ingestor(
        **ingestor_env(dsn=fresh_db, port=broker.port, prefix=prefix, client_id="ing-registry")
    )
    registry = tmp_path / "registry.csv"
    registry.write_text(
        "MeterId,MeterNumber,ElectronicSerialNumber,ServicePointId,PremiseId,TransformerId,"
        "FeederId,ValidFrom,ValidTo\n"
        "m-1,N1,E1,SP1,P1,XF-OLD,F1,2025-01-01,2026-05-05\n"
        "m-1,N1,E1,SP1,P1,XF-NEW,F2,2026-05-05,\n"
        "bad-row,,,,,,,not-a-date,\n"
    )
    first = cli(fresh_db, "registry", "load", str(registry))
    assert "added 2, changed 0, unchanged 0, rejected 1" in first.stdout
    assert first.returncode == 1  # rejected rows are reported as a failure
    again = cli(fresh_db, "registry", "load", str(registry))
    assert "added 0, changed 0, unchanged 2" in again.stdout

    day = 24 * 60
    messages = session(prefix, "m-1", "tx-before") + session(prefix, "m-1", "tx-after", offset=day)
    messages += session(prefix, "m-new", "tx-unknown")
    publish_all(broker.port, messages)
    wait_count(
        fresh_db,
        "SELECT count(*) FROM charging_events WHERE status='closed'",
        3,
        timeout=30,
        what="three closed events",
    )
    with psycopg.connect(fresh_db) as conn:
        rows = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT transaction_id, transformer_id, feeder_id, registry_matched, flags"
                " FROM charging_events"
            )
        }
    assert rows["tx-before"] == ("XF-OLD", "F1", True, [])
    assert rows["tx-after"] == ("XF-NEW", "F2", True, [])
    assert rows["tx-unknown"] == (None, None, False, ["unknown_asset"])

    late = tmp_path / "late.csv"
    late.write_text("MeterId,TransformerId,FeederId,ValidFrom\nm-new,XF-9,F9,2020-01-01\n")
    loaded = cli(fresh_db, "registry", "load", str(late))
    assert "events re-enriched 1" in loaded.stdout
    with psycopg.connect(fresh_db) as conn:
        row = conn.execute(
            "SELECT transformer_id, registry_matched, flags FROM charging_events"
            " WHERE transaction_id = 'tx-unknown'"
        ).fetchone()
    assert row == ("XF-9", True, [])


def test_orphans_close_on_the_meters_clock_not_the_wall_clock(
    broker: BrokerAddress, fresh_db: str, start_ingestor: Callable[..., ServiceProcess]
) -> None:
    """Three sessions that started months ago (T0) arrive now with no Ended, as from a gateway
    replaying its queue. m-1's readings go on 49 h past its session: orphaned. m-2 and m-3
    (readings only 47 h past) stay open: their Ended may still be on its way. Once nothing
    more is received from a meter for the silent limit, its session closes too."""
    prefix = unique_prefix()
    env = ingestor_env(dsn=fresh_db, port=broker.port, prefix=prefix, client_id="ing-orphan",
                       INGEST_MAX_OPEN_HOURS="48")  # fmt: skip
    first = start_ingestor(**env)
    messages = [
        *session(prefix, "m-1", "tx-1")[:3],
        measurement(prefix, "m-1", 75 + 49 * 60),
        *session(prefix, "m-2", "tx-2")[:3],
        *session(prefix, "m-3", "tx-3")[:3],
        measurement(prefix, "m-3", 75 + 47 * 60),
    ]
    publish_all(broker.port, messages)
    timed_out = "SELECT count(*) FROM charging_events WHERE status = 'timed_out'"
    wait_until(lambda: count(fresh_db, timed_out) == 1, timeout=30, what="the orphan")
    time.sleep(1.5)  # more maintenance passes leave m-2 and m-3 alone
    assert count(fresh_db, timed_out) == 1
    first.stop()
    start_ingestor(**{**env, "INGEST_SILENT_METER_HOURS": "0.0005"})  # 1.8 s
    wait_until(lambda: count(fresh_db, timed_out) == 3, timeout=30, what="silent meters")
    with psycopg.connect(fresh_db) as conn:
        rows = dict(conn.execute(
            "SELECT transaction_id, close_reason FROM charging_events"
        ).fetchall())  # fmt: skip
        kinds = conn.execute(
            "SELECT transaction_id, array_agg(kind ORDER BY id) FROM outbox GROUP BY 1"
        ).fetchall()
    assert rows == {
        "tx-1": "no Ended within 48 h of the last message while the meter kept reporting",
        "tx-2": "meter silent for 0.0005 h with the session open",
        "tx-3": "meter silent for 0.0005 h with the session open",
    }
    assert dict(kinds) == {tid: ["start", "end"] for tid in rows}


def test_a_late_session_sent_ended_first_is_never_taken_for_an_orphan(
    broker: BrokerAddress, fresh_db: str, start_ingestor: Callable[..., ServiceProcess]
) -> None:
    """The edge's second look sends a session days old, its Ended before its Started, while the
    meter's readings are days past it. Ended first, the event closes whole, with its own end.
    The control, m-2: the Started alone is timed out as an orphan (no Ended while the meter
    reported on for 48 h), and the Ended that follows closes it flagged."""
    prefix = unique_prefix()
    start_ingestor(**ingestor_env(dsn=fresh_db, port=broker.port, prefix=prefix,
                                  client_id="ing-late", INGEST_MAX_OPEN_HOURS="48"))  # fmt: skip
    late, control = session(prefix, "m-1", "tx-late"), session(prefix, "m-2", "tx-ctrl")
    days_on = [measurement(prefix, meter, 5 * 24 * 60) for meter in ("m-1", "m-2")]
    publish_all(broker.port, [*days_on, late[3], late[0], control[0]])
    timed_out = "SELECT count(*) FROM charging_events WHERE status = 'timed_out'"
    wait_until(lambda: count(fresh_db, timed_out) == 1, timeout=30, what="the control's orphan")
    publish_all(broker.port, [control[3]])
    closed = "SELECT count(*) FROM charging_events WHERE status = 'closed'"
    wait_until(lambda: count(fresh_db, closed) == 2, timeout=30, what="both closed")
    with psycopg.connect(fresh_db) as conn:
        events = {
            tx: (end - start, reason, flags)
            for tx, start, end, reason, flags in conn.execute(
                "SELECT transaction_id, charge_start_time, charge_end_time, close_reason, flags"
                " FROM charging_events"
            )
        }
        kinds = dict(conn.execute(
            "SELECT transaction_id, array_agg(kind ORDER BY id) FROM outbox GROUP BY 1"
        ).fetchall())  # fmt: skip
    duration, reason, flags = events["tx-late"]
    assert (duration, reason) == (timedelta(hours=2), None)
    assert "ended_after_timeout" not in flags
    assert kinds["tx-late"] == ["start", "end"]
    assert "ended_after_timeout" in events["tx-ctrl"][2]


def flood(prefix: str, meters: int, minutes: int) -> list[tuple[str, bytes]]:
    messages = [measurement(prefix, f"m-{i}", t) for t in range(minutes) for i in range(meters)]
    for i in range(meters):
        messages += session(prefix, f"m-{i}", f"tx-{i}")
    return messages


def test_kill_9_mid_flood_loses_and_doubles_nothing(
    broker: BrokerAddress, fresh_db: str, start_ingestor: Callable[..., ServiceProcess]
) -> None:
    """SIGKILL while batches are in flight, messages published while it is down, restart:
    every message is stored exactly once and every session has one start and one end."""
    prefix = unique_prefix()
    env = ingestor_env(dsn=fresh_db, port=broker.port, prefix=prefix, client_id="ing-kill")
    first = start_ingestor(**env)
    messages = flood(prefix, meters=40, minutes=500)
    half = len(messages) // 2
    publisher = threading.Thread(target=publish_all, args=(broker.port, messages[:half]))
    publisher.start()
    wait_until(
        lambda: count(fresh_db, "SELECT count(*) FROM measurements") > 2000,
        timeout=60,
        what="some rows stored",
    )
    first.kill()
    publisher.join()
    publish_all(broker.port, messages[half:])  # while no ingestor runs: the session keeps them
    start_ingestor(**env)
    measurements_total = 40 * 500
    wait_count(
        fresh_db,
        "SELECT count(*) FROM measurements",
        measurements_total,
        timeout=120,
        what="all measurements",
    )
    wait_count(fresh_db, "SELECT count(*) FROM outbox", 80, timeout=60, what="all outbox rows")
    assert count(fresh_db, "SELECT count(*) FROM charging_events WHERE status='closed'") == 40
    assert count(fresh_db, "SELECT count(DISTINCT (transaction_id, kind)) FROM outbox") == 80
    wait_count(
        fresh_db,
        "SELECT count(*) FROM transaction_log",
        160,
        timeout=60,
        what="all transaction messages",
    )


def test_two_replicas_on_one_share_group_store_exactly_once(
    broker: BrokerAddress, fresh_db: str, start_ingestor: Callable[..., ServiceProcess]
) -> None:
    """Two ingestor processes split one flood; together they store each message once."""
    prefix = unique_prefix()
    replicas = [
        start_ingestor(
            **ingestor_env(
                dsn=fresh_db,
                port=broker.port,
                prefix=prefix,
                client_id=f"ing-r{i}",
                group="ingestor",
            )
        )
        for i in range(2)
    ]
    messages = flood(prefix, meters=20, minutes=300)
    publish_all(broker.port, messages)
    wait_count(
        fresh_db,
        "SELECT count(*) FROM measurements",
        20 * 300,
        timeout=120,
        what="all measurements",
    )
    wait_count(fresh_db, "SELECT count(*) FROM outbox", 40, timeout=60, what="all outbox rows")
    stored = [
        scrape(r.metrics_url())['ev_ingest_messages_total{kind="measurement",outcome="stored"}']
        for r in replicas
    ]
    assert sum(stored) == 20 * 300
    assert min(stored) > 0, f"one replica got nothing: {stored}"
    wait_count(
        fresh_db,
        "SELECT count(*) FROM transaction_log",
        80,
        timeout=60,
        what="all transaction messages",
    )


def test_database_restart_mid_stream_loses_nothing(
    broker: BrokerAddress,
    private_postgres: Callable[[], PostgresServer],
    start_ingestor: Callable[..., ServiceProcess],
) -> None:
    """The database goes away and comes back while messages flow: all are stored once."""
    server = private_postgres()
    dsn = server.dsn()
    migrate(dsn)
    prefix = unique_prefix()
    ingestor = start_ingestor(
        **ingestor_env(dsn=dsn, port=broker.port, prefix=prefix, client_id="ing-dbrestart")
    )
    messages = flood(prefix, meters=10, minutes=300)
    publish_all(broker.port, messages[:1000])
    wait_until(lambda: count(dsn, "SELECT count(*) FROM measurements") >= 1000, timeout=60,
               what="first part")  # fmt: skip
    server.stop(mode="immediate")
    publish_all(broker.port, messages[1000:])
    time.sleep(1.5)
    server.start()
    wait_count(
        dsn,
        "SELECT count(*) FROM measurements",
        3000,
        timeout=120,
        what="all measurements after the restart",
    )
    wait_count(dsn, "SELECT count(*) FROM outbox", 20, timeout=60, what="outbox rows")
    assert "error connecting" in ingestor.log()  # the outage was real


def test_migrations_are_idempotent_and_partitions_absorb_the_default(fresh_db: str) -> None:
    """migrate twice applies nothing new; a month created later takes its rows out of the
    default partition; retention drops partitions older than 13 months."""
    first = cli(fresh_db, "migrate")
    assert first.returncode == 0
    assert "postgres: applied 0001_core, 0002_timeseries" in first.stdout
    assert "up to date" in cli(fresh_db, "migrate").stdout
    far = datetime(2031, 3, 2, tzinfo=UTC)
    old = datetime.now(UTC) - timedelta(days=500)
    with psycopg.connect(fresh_db) as conn:
        conn.execute(
            "INSERT INTO measurements VALUES ('a', %s, 1, 1, NULL, 's', now()),"
            " ('a', %s, 1, 1, NULL, 's', now())",
            (far, old),
        )
        conn.execute("SELECT ev_ensure_partitions(%s, 1)", (far,))
        where = conn.execute(
            "SELECT tableoid::regclass::text FROM measurements WHERE ts = %s", (far,)
        ).fetchone()
        assert where == ("measurements_p203103",)
        conn.execute("SELECT ev_ensure_partitions(%s, 1)", (old,))
        dropped = conn.execute("SELECT ev_apply_retention()").fetchone()
        assert dropped is not None
        assert dropped[0] >= 3
        remaining = conn.execute("SELECT count(*) FROM measurements").fetchone()
        assert remaining == (1,)


def test_a_broker_restart_while_the_ingestor_is_away_loses_nothing(
    tmp_path: Path, fresh_db: str, start_ingestor: Callable[..., ServiceProcess]
) -> None:
    """Messages published after a broker restart, before the ingestor is back, are kept for
    it: the default plain subscription is restored with the session (Mosquitto 2.0 drops
    shared subscriptions over its restart, which is why sharing is opt-in)."""
    broker = MosquittoServer(tmp_path / "mosquitto", persistence=True)
    broker.start()
    try:
        prefix = unique_prefix()
        env = ingestor_env(dsn=fresh_db, port=broker.port, prefix=prefix, client_id="ing-away")
        start_ingestor(**env).stop()
        broker.restart()
        messages = flood(prefix, meters=3, minutes=20)
        publish_all(broker.port, messages)
        start_ingestor(**env)
        wait_count(fresh_db, "SELECT count(*) FROM measurements", 60, timeout=60,
                   what="the measurements published while the ingestor was away")  # fmt: skip
        wait_count(fresh_db, "SELECT count(*) FROM transaction_log", 12, timeout=60,
                   what="the transactions published while the ingestor was away")  # fmt: skip
    finally:
        broker.stop()
