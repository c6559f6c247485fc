"""Power-limit commands at the gateway against a real Mosquitto: a command is acknowledged to
the broker only once its verdict is queued, so a gateway killed in between gets it again from
its persistent session, and one that answered it does not."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from edge_agent.actuators import ChargerAnswer, ChargerRating, NoCharger
from edge_agent.control import CommandReceiver, PowerControl, Verdict, VerifyPolicy
from edge_agent.metrics import EdgeMetrics
from runtime.mqtt import MqttConnection, MqttSettings, make_connection
from runtime.processes import wait_until
from schemas.edrv import ActionStatus, ActionType, EdgeCommand, LimitUnit, PowerLimit
from schemas.topics import EdgeKind, edge_topic
from tests.conftest import BrokerAddress
from tests.integration.services import publish_all, unique_prefix

pytestmark = pytest.mark.integration

SITE = "site-1"


class HangingCharger:
    """A charger still being asked when the gateway dies: ``apply`` never returns (its thread,
    a daemon, is left as a killed process leaves it)."""

    def __init__(self) -> None:
        self.asked = threading.Event()

    def apply(self, asset_id: str, limit: PowerLimit | None) -> ChargerAnswer:
        self.asked.set()
        threading.Event().wait()
        raise AssertionError("unreachable")

    def session_ended(self, asset_id: str) -> None:
        return


@dataclass
class Gateway:
    connection: MqttConnection
    control: PowerControl
    verdicts: list[Verdict] = field(default_factory=list)
    subscribed: threading.Event = field(default_factory=threading.Event)
    killed: bool = False

    def kill(self) -> None:
        """As ``kill -9`` leaves it: no DISCONNECT, the socket just closes, nothing winds down."""
        self.killed = True
        self.connection.client.loop_stop()
        sock = self.connection.client.socket()
        if sock is not None:
            sock.close()


@contextmanager
def gateway(broker: BrokerAddress, prefix: str, client_id: str, charger: Any) -> Iterator[Gateway]:
    settings = MqttSettings(host=broker.host, port=broker.port, topic_prefix=prefix)
    connection = make_connection(settings, client_id, clean_start=False, session_expiry_s=300)
    verdicts: list[Verdict] = []
    control = PowerControl(
        charger,
        rating=ChargerRating(),
        policy=VerifyPolicy(),
        emit=verdicts.extend,  # the agent's durable queue, in the service
        open_session=lambda _asset: "tx-1",
    )
    receiver = CommandReceiver(connection, SITE, control, EdgeMetrics(CollectorRegistry()))
    gw = Gateway(connection, control, verdicts)
    connection.client.on_subscribe = lambda *_: gw.subscribed.set()
    control.start()
    receiver.start()
    try:
        assert gw.subscribed.wait(10), "no SUBACK"
        yield gw
    finally:
        if not gw.killed:
            connection.stop()
            control.stop()


def _command(action_id: str) -> bytes:
    now = datetime.now(UTC)
    command = EdgeCommand(
        actionId=action_id,
        transactionId="tx-1",
        type=ActionType.SET_POWER_LIMIT,
        data=PowerLimit(unit=LimitUnit.POWER, limit=1500.0),
        issuedAt=now,
        expiresAt=now + timedelta(minutes=10),
    )
    return command.model_dump_json(by_alias=True, exclude_none=True).encode()


def test_a_command_the_gateway_died_on_comes_back_and_an_answered_one_does_not(
    broker: BrokerAddress,
) -> None:
    prefix = unique_prefix()
    client_id = f"edge-cmd-{uuid.uuid4().hex[:8]}"
    topic = edge_topic(SITE, "meter-1", EdgeKind.COMMAND, prefix=prefix)
    action_id = f"act-{uuid.uuid4().hex[:8]}"
    hanging = HangingCharger()
    with gateway(broker, prefix, client_id, hanging) as first:
        publish_all(broker.port, [(topic, _command(action_id))])
        assert hanging.asked.wait(10), "the command did not reach the charger"
        first.kill()  # before any verdict: the broker must still hold the command
        assert first.verdicts == []
    with gateway(broker, prefix, client_id, NoCharger()) as second:
        wait_until(lambda: second.verdicts, timeout=10, what="the command, delivered again")
        [answered] = second.verdicts
        assert answered.result.action_id == action_id
        assert answered.result.status is ActionStatus.FAILED
        assert "no controllable charger" in (answered.result.reason or "")
        time.sleep(0.5)  # the acknowledgement goes out before the DISCONNECT
    with gateway(broker, prefix, client_id, NoCharger()) as third:
        time.sleep(2)
        assert third.verdicts == []  # acknowledged once answered: not delivered a third time
