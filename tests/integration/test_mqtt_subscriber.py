"""The lean subscriber against a real Mosquitto: acks only when told, sessions resumed."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from runtime.mqtt import MqttSettings
from runtime.mqtt_subscriber import BulkSubscriber, Inbound
from runtime.processes import wait_until
from tests.conftest import BrokerAddress
from tests.integration.services import publish_all


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Inbound] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()

    def on_messages(self, messages: list[Inbound]) -> None:
        with self.lock:
            self.messages.extend(messages)

    def on_connected(self, up: bool) -> None:
        if up:
            self.connected.set()

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [m.payload for m in self.messages]


@contextmanager
def subscribed(
    broker: BrokerAddress, client_id: str, topic: str, *, receive_maximum: int = 100
) -> Iterator[tuple[BulkSubscriber, Inbox]]:
    inbox = Inbox()
    subscriber = BulkSubscriber(
        MqttSettings(host=broker.host, port=broker.port),
        client_id,
        topics=[topic],
        on_messages=inbox.on_messages,
        on_connected=inbox.on_connected,
        clean_start=False,
        session_expiry_s=300,
        receive_maximum=receive_maximum,
    )
    subscriber.start()
    try:
        assert inbox.connected.wait(10), "no SUBACK"
        yield subscriber, inbox
    finally:
        subscriber.stop()


def test_unacknowledged_messages_come_back_and_acknowledged_ones_do_not(
    broker: BrokerAddress,
) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}/data"
    client_id = f"sub-{uuid.uuid4().hex[:8]}"
    sent = [f"m{i}".encode() for i in range(10)]
    with subscribed(broker, client_id, topic) as (subscriber, inbox):
        publish_all(broker.port, [(topic, p) for p in sent])
        wait_until(lambda: len(inbox.messages) == 10, timeout=10, what="all 10")
        assert inbox.payloads() == sent
        subscriber.ack(inbox.messages[:6])
    # Published while no one is connected: queued in the kept session.
    publish_all(broker.port, [(topic, b"late")])
    with subscribed(broker, client_id, topic) as (_, inbox):
        wait_until(lambda: len(inbox.messages) >= 5, timeout=10, what="redelivery")
        assert inbox.payloads() == [*sent[6:], b"late"]


def test_receive_maximum_bounds_what_is_unacknowledged(broker: BrokerAddress) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}/data"
    with subscribed(broker, f"sub-{uuid.uuid4().hex[:8]}", topic, receive_maximum=3) as (
        subscriber,
        inbox,
    ):
        publish_all(broker.port, [(topic, f"m{i}".encode()) for i in range(8)])
        for delivered in (3, 6):
            wait_until(lambda n=delivered: len(inbox.messages) >= n, timeout=10, what="a window")
            threading.Event().wait(0.5)
            assert len(inbox.messages) == delivered  # nothing more until acknowledged
            subscriber.ack(inbox.messages[delivered - 3 : delivered])
        wait_until(lambda: len(inbox.messages) == 8, timeout=10, what="the rest")
        assert inbox.payloads() == [f"m{i}".encode() for i in range(8)]
