"""Power-limit commands at the edge: received, handed to the charger, verified on the meter.

``{prefix}/{site}/+/command`` arrives over a persistent MQTT session, so a command sent while
the gateway is offline waits in the broker, but only until its MQTT 5 message expiry; one that
still arrives after its ``expiresAt`` is answered ``failed`` and never applied. A command is
handed to the :class:`~edge_agent.actuators.Actuator` (in a thread of its own: a charger may
take seconds to answer). An accepted *set* is ``completed`` only when the detector sees the EV
at or under the limit within ``verify_s`` of meter time, else ``failed``; an accepted *clear*
is completed at once (an EV need not draw more just because it may). Every verdict goes out
through the agent's durable queue, like its transactions.

A command is acknowledged to the broker (MQTT 5 manual ack) only once its verdict is in that
queue: a gateway killed between receiving a command and queueing its verdict gets the command
again from its persistent session when it comes back, rather than losing it. A copy delivered
again while the gateway runs is answered once, and acknowledged with the first.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from edge_agent.actuators import Actuator, ChargerRating
from edge_agent.detector import MeterDetector
from runtime.mqtt import MqttConnection
from schemas.edrv import ActionStatus, ActionType, CommandResult, EdgeCommand
from schemas.topics import EdgeKind, TopicError, parse_edge_topic, site_filter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A command result to queue for the broker."""

    asset_id: str
    result: CommandResult


def verdict(
    command: EdgeCommand,
    asset_id: str,
    status: ActionStatus,
    reason: str | None = None,
    measured_w: float | None = None,
) -> Verdict:
    return Verdict(
        asset_id,
        CommandResult(
            actionId=command.action_id,
            transactionId=command.transaction_id,
            status=status,
            reason=reason,
            measuredEvPower=measured_w,
            timestamp=datetime.now(UTC),
        ),
    )


@dataclass
class _Watch:
    """An accepted command the reading thread still has to reconcile with the detector."""

    asset_id: str
    command: EdgeCommand
    limit_w: float | None
    deadline: float | None = None


@dataclass(frozen=True)
class VerifyPolicy:
    verify_s: float = 300.0
    tolerance: float = 0.05
    tolerance_w: float = 100.0

    def satisfied(self, ev_power_w: float, limit_w: float) -> bool:
        return ev_power_w <= limit_w * (1 + self.tolerance) + self.tolerance_w


class PowerControl:
    """Commands in (any thread), actuator calls (own thread), verification (reading thread)."""

    def __init__(
        self,
        actuator: Actuator,
        *,
        rating: ChargerRating,
        policy: VerifyPolicy,
        emit: Callable[[list[Verdict]], None],
        open_session: Callable[[str], str | None],
    ) -> None:
        self.actuator = actuator
        self.rating = rating
        self.policy = policy
        self._emit = emit
        self._open_session = open_session
        self._inbox: queue.Queue[tuple[str, EdgeCommand] | None] = queue.Queue()
        self._accepted: queue.SimpleQueue[_Watch] = queue.SimpleQueue()
        self._watches: dict[str, _Watch] = {}
        # Action ids received, each with the broker acks waiting for its verdict to be queued
        # (None once it is, and they were sent). Delivery and verdicts run in other threads.
        self._seen: OrderedDict[str, list[Callable[[], None]] | None] = OrderedDict()
        self._seen_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="power-control", daemon=True)

    # -- any thread
    def submit(
        self, asset_id: str, command: EdgeCommand, ack: Callable[[], None] | None = None
    ) -> None:
        """Take a command in; ``ack`` is called once its verdict is queued (see
        :meth:`acknowledge`)."""
        with self._seen_lock:
            if command.action_id in self._seen:
                # A redelivered copy: answered (or being answered) already.
                waiting = self._seen[command.action_id]
                if waiting is not None and ack is not None:
                    waiting.append(ack)
                    ack = None
            else:
                self._seen[command.action_id] = [ack] if ack is not None else []
                while len(self._seen) > 10_000:
                    self._seen.popitem(last=False)
                self._inbox.put((asset_id, command))
                return
        if ack is not None:
            ack()

    def acknowledge(self, action_ids: Iterable[str]) -> None:
        """These commands' verdicts are in the durable queue: acknowledge them to the broker."""
        for action_id in action_ids:
            with self._seen_lock:
                waiting = self._seen.get(action_id)
                if action_id in self._seen:
                    self._seen[action_id] = None
            for ack in waiting or []:
                ack()

    def _emit_durably(self, verdicts: list[Verdict]) -> None:
        self._emit(verdicts)  # returns once they are queued on disk
        self.acknowledge(v.result.action_id for v in verdicts)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join(timeout=10)

    # -- actuator thread
    def _run(self) -> None:
        while (item := self._inbox.get()) is not None:
            asset_id, command = item
            try:
                self._handle(asset_id, command)
            except Exception as exc:  # a charger fault must not stop control
                log.exception("command %s failed", command.action_id)
                self._emit_durably(
                    [verdict(command, asset_id, ActionStatus.FAILED, f"charger error: {exc}")]
                )

    def _handle(self, asset_id: str, command: EdgeCommand) -> None:
        if datetime.now(UTC) >= command.expires_at:
            self._emit_durably([verdict(command, asset_id, ActionStatus.FAILED,
                                "the command expired before it reached the charger")])  # fmt: skip
            return
        if self._open_session(asset_id) != command.transaction_id:
            self._emit_durably([verdict(command, asset_id, ActionStatus.FAILED,
                                f"session {command.transaction_id} is not charging on meter "
                                f"{asset_id}")])  # fmt: skip
            return
        answer = self.actuator.apply(asset_id, command.data)
        if not answer.accepted:
            self._emit_durably([verdict(command, asset_id, ActionStatus.FAILED,
                                answer.reason or "rejected by the charger")])  # fmt: skip
            return
        limit_w = self.rating.watts(command.data) if command.data is not None else None
        log.info("%s accepted by the charger on %s (limit %s W)", command.action_id, asset_id,
                 limit_w)  # fmt: skip
        self._accepted.put(_Watch(asset_id, command, limit_w))

    # -- reading thread
    def observe(self, asset_id: str, t: float, detector: MeterDetector) -> list[Verdict]:
        """After each reading of ``asset_id``: settle what the meter now shows."""
        while True:
            try:
                watch = self._accepted.get_nowait()
            except queue.Empty:
                break
            self._watches[watch.command.action_id] = watch
        if not self._watches:
            return []
        out: list[Verdict] = []
        for action_id, watch in list(self._watches.items()):
            if watch.asset_id != asset_id:
                continue
            result = self._judge(watch, t, detector)
            if result is not None:
                out.append(result)
                del self._watches[action_id]
        return out

    def _judge(self, watch: _Watch, t: float, detector: MeterDetector) -> Verdict | None:
        command = watch.command
        if watch.deadline is None:
            if not detector.expect_limit(command.transaction_id, watch.limit_w):
                return verdict(command, watch.asset_id, ActionStatus.FAILED,
                               "the session ended before the limit took effect")  # fmt: skip
            if command.type is ActionType.CLEAR_POWER_LIMIT:
                return verdict(command, watch.asset_id, ActionStatus.COMPLETED)
            watch.deadline = t + self.policy.verify_s
        assert watch.limit_w is not None
        ev = detector.ev_power_w
        if detector.open_session() != command.transaction_id:
            return verdict(command, watch.asset_id, ActionStatus.FAILED,
                           "the session ended before the limit was verified")  # fmt: skip
        if self.policy.satisfied(ev, watch.limit_w):
            return verdict(command, watch.asset_id, ActionStatus.COMPLETED, measured_w=round(ev, 1))
        if t >= watch.deadline:
            return verdict(
                command, watch.asset_id, ActionStatus.FAILED,
                f"the EV still drew {ev:.0f} W, above the {watch.limit_w:.0f} W limit, "
                f"{self.policy.verify_s:g} s after the charger accepted it",
                measured_w=round(ev, 1),
            )  # fmt: skip
        return None


class CommandReceiver:
    """The gateway's command topic over a persistent session; bad commands are logged, counted
    and dropped (there is no one to answer a command without an action id). A good one is
    acknowledged to the broker only once its verdict is queued (``PowerControl.acknowledge``)."""

    def __init__(
        self, connection: MqttConnection, site_id: str, control: PowerControl, metrics: Any
    ) -> None:
        self.connection = connection
        self.control = control
        self.metrics = metrics
        self.prefix = connection.settings.topic_prefix
        self.topic = site_filter(site_id, EdgeKind.COMMAND, prefix=connection.settings.topic_prefix)
        connection.client.manual_ack_set(True)
        connection.client.on_connect = self._on_connect
        connection.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        def ack() -> None:
            client.ack(message.mid, message.qos)

        try:
            asset_id = parse_edge_topic(message.topic, prefix=self.prefix).asset_id
            command = EdgeCommand.model_validate_json(message.payload)
        except (TopicError, ValidationError) as exc:
            self.metrics.commands.labels("invalid").inc()
            log.warning("invalid command on %s: %s", message.topic, str(exc).splitlines()[0])
            ack()  # nothing to answer, nor to gain from having it again
            return
        self.metrics.commands.labels("received").inc()
        self.control.submit(asset_id, command, ack)

    def start(self) -> None:
        self.connection.start()

    def stop(self) -> None:
        self.connection.stop()
