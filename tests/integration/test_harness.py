"""The harness gives real servers: a broker that routes QoS 1 messages and a PostgreSQL."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = pytest.mark.integration


def test_broker_round_trips_a_qos1_message(broker):
    """A message published at QoS 1 reaches a subscriber of the real broker."""
    topic = f"ev/v1/test/{uuid.uuid4().hex}/measurement"
    got = threading.Event()
    received: list[bytes] = []

    def on_message(_c, _u, msg):
        received.append(msg.payload)
        got.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    sub.subscribe(topic, qos=1)[1]
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        # Retry until the subscription is in place (SUBACK races the first publish).
        for _ in range(50):
            pub.publish(topic, b"hello", qos=1).wait_for_publish(2)
            if got.wait(0.1):
                break
        assert received
        assert received[0] == b"hello"
    finally:
        for client in (pub, sub):
            client.loop_stop()
            client.disconnect()


def test_database_is_fresh_and_writable(database):
    """Each module gets its own empty database on a real PostgreSQL server."""
    with psycopg.connect(database) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE probe (x int)")
        conn.execute("INSERT INTO probe VALUES (1)")
        assert conn.execute("SELECT sum(x) FROM probe").fetchone() == (1,)


def test_private_servers_restart(private_broker, private_postgres):
    """Private servers can be stopped and restarted by a test without losing their data."""
    server = private_postgres()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")
    server.restart()
    with psycopg.connect(server.dsn()) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (7,)
    mq = private_broker()
    mq.restart()
    assert mq.running
