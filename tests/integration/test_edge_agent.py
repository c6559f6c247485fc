"""Edge agent against a real Mosquitto: every message arrives, in order per meter, through a
broker restart and a kill -9 of the agent, with no session lost or doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.detector import MeterDetector
from edge_agent.simulator import HouseholdSpec, simulate_household
from edge_agent.sources import simulated_fleet
from schemas import GatewayStatus, Measurement, Transaction
from tests.unit.test_priming import DAY_MIN, rows_of, week_then_the_ac_day

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Subscriber:
    """A persistent-session QoS 1 subscriber that records everything under ev/v1/#."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="test-sub", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda c, *_: c.subscribe("ev/v1/#", qos=1)
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, _c, _u, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def write_fleet(path: Path, meters: int, days: int) -> list[tuple[str, float, float, float]]:
    traces = [
        simulate_household(100 + i, HouseholdSpec(days=days), asset_id=f"m{i}").resample(60)
        for i in range(meters)
    ]
    return write_readings(path, list(simulated_fleet(traces)))


def write_readings(path: Path, readings: list[tuple[str, float, float, float]]):
    """``readings`` as Pleevi measurement JSON Lines."""
    with path.open("wb") as out:
        for asset, t, p, e in readings:
            stamp = datetime.fromtimestamp(t, UTC).isoformat()
            out.write(
                orjson.dumps(
                    {"assetId": asset, "timestamp": stamp, "energyValue": e, "powerValue": p}
                )
                + b"\n"
            )
    return readings


def expected_transactions(readings) -> set[tuple[str, int, str]]:
    detectors: dict[str, MeterDetector] = {}
    out = set()
    for asset, t, p, e in readings:
        det = detectors.setdefault(asset, MeterDetector(asset, warms_up=True))  # as the agent
        for tr in det.update(t, p, e):
            out.add((tr.transaction_id, tr.sequence_number, tr.state.value))
    return out


def start_agent(
    port: int, store: Path, data: Path, speed: float, **settings: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **{f"EDGE_{name.upper()}": value for name, value in settings.items()},
        "EDGE_MQTT__PORT": str(port),
        "EDGE_STORE_PATH": str(store),
        "EDGE_SOURCE": "file",
        "EDGE_INPUT": str(data),
        "EDGE_SPEED": str(speed),
        "EDGE_HEARTBEAT_S": "0.5",
    }
    with (store.parent / "agent.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def replay_to_the_end(port: int, store: Path, data: Path, **settings: str) -> None:
    """The agent replays ``data`` flat out and exits once the broker acknowledged all."""
    agent = start_agent(port, store, data, 0, **settings)
    try:
        assert agent.wait(120) == 0
    finally:
        if agent.poll() is None:
            agent.kill()


def test_nothing_lost_through_kill_and_broker_restart(private_broker, tmp_path):
    """kill -9 of the agent and a broker restart mid-trace: all messages arrive, none doubled."""
    broker = private_broker(persistence=True)
    data = tmp_path / "fleet.jsonl"
    readings = write_fleet(data, meters=3, days=3)
    expected_tx = expected_transactions(readings)
    assert len(expected_tx) >= 6, "the trace must contain sessions"
    expected_measurements = {(a, round(t)) for a, t, _, _ in readings}

    sub = Subscriber(broker.port)
    store = tmp_path / "agent.sqlite3"
    # About 6 s of replay for 3 days of readings.
    agent = start_agent(broker.port, store, data, speed=45_000)
    try:
        time.sleep(2.0)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        agent = start_agent(broker.port, store, data, speed=45_000)
        time.sleep(1.5)
        broker.stop()
        time.sleep(2.0)
        broker.start()
        assert agent.wait(90) == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = sub.snapshot()
            measurements = {
                (m.asset_id, round(m.timestamp.timestamp()))
                for topic, payload in got
                if topic.endswith("/measurement")
                for m in [Measurement.model_validate_json(payload)]
            }
            if measurements >= expected_measurements:
                break
            time.sleep(0.5)
    finally:
        if agent.poll() is None:
            agent.kill()
        sub.close()

    got = sub.snapshot()
    transactions = [
        Transaction.model_validate_json(p) for topic, p in got if topic.endswith("/transaction")
    ]
    received_tx = {
        (t.transaction_id, t.sequence_number, t.transaction_state.value) for t in transactions
    }
    assert received_tx == expected_tx  # nothing lost, nothing invented

    # Nothing doubled: after de-duplication by (transactionId, sequenceNumber) each session has
    # exactly one Started and one Ended.
    per_session: dict[str, list[str]] = defaultdict(list)
    for tx_id, _seq, state in received_tx:
        per_session[tx_id].append(state)
    for tx_id, states in per_session.items():
        assert states.count("Started") == 1, tx_id
        assert states.count("Ended") <= 1, tx_id

    assert measurements == expected_measurements

    # In order per meter: first occurrences of measurements have increasing timestamps.
    seen: set[tuple[str, int]] = set()
    last: dict[str, int] = {}
    for topic, payload in got:
        if not topic.endswith("/measurement"):
            continue
        m = Measurement.model_validate_json(payload)
        key = (m.asset_id, round(m.timestamp.timestamp()))
        if key in seen:
            continue
        seen.add(key)
        assert key[1] > last.get(m.asset_id, -1), f"{m.asset_id} out of order"
        last[m.asset_id] = key[1]

    statuses = [GatewayStatus.model_validate_json(p) for t, p in got if t.endswith("/status")]
    assert statuses
    assert statuses[-1].state.value == "offline"  # a clean exit says so (retained)


def test_the_second_look_sends_late_over_the_broker_what_the_live_detector_missed(
    private_broker, tmp_path
):
    """Ten hot days of a house (one charge lost live among the AC's afternoon runs) replayed
    through the agent: the live detector's transitions and, late, the lost charge's Ended and
    Started reach a subscriber; with the second look off, only the live detector's."""
    broker = private_broker()
    trace = simulate_household(10, HouseholdSpec(days=10, hot_days=True, abrupt_ends=True))
    readings = list(simulated_fleet([trace.resample(60)]))
    data = tmp_path / "hot.jsonl"
    write_readings(data, readings)
    live = expected_transactions(readings)
    sub = Subscriber(broker.port)
    try:
        for days in ("14", "0"):  # site "look-14", then site "look-0"
            store = tmp_path / f"agent-{days}.sqlite3"
            replay_to_the_end(
                broker.port, store, data, second_look_days=days, site_id=f"look-{days}"
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            received = {
                days: {
                    (t.transaction_id, t.sequence_number, t.transaction_state.value)
                    for topic, p in sub.snapshot()
                    if topic.startswith(f"ev/v1/look-{days}/") and topic.endswith("/transaction")
                    for t in [Transaction.model_validate_json(p)]
                }
                for days in ("14", "0")
            }
            if received["0"] >= live and received["14"] > live:
                break
            time.sleep(0.2)
    finally:
        sub.close()
    assert received["0"] == live
    assert live <= received["14"]
    late = received["14"] - live
    assert late, "the second look sent nothing"
    late_states: dict[str, list[str]] = defaultdict(list)
    for tx_id, _seq, state in late:
        late_states[tx_id].append(state)
    assert all(sorted(states) == ["Ended", "Started"] for states in late_states.values())


def test_a_gateway_primed_with_its_meters_history_sends_a_charge_a_cold_one_loses(
    private_broker, tmp_path
):
    """The agent run with ``EDGE_HISTORY`` (six nights of the meter's charges) over the AC day
    of ``test_priming``: the charge among the AC's cycles reaches a subscriber, Started and
    Ended; the same day run without the history sends no session (the control)."""
    broker = private_broker()
    rows = rows_of(7 * 24, week_then_the_ac_day)
    history, day = tmp_path / "history.jsonl", tmp_path / "day.jsonl"
    write_readings(history, [("m", t, p, e) for t, p, e in rows[: 6 * DAY_MIN]])
    write_readings(day, [("m", t, p, e) for t, p, e in rows[6 * DAY_MIN :]])
    sub = Subscriber(broker.port)
    received: dict[str, list[Transaction]] = {}
    try:
        for site, extra in (("primed", {"history": str(history)}), ("cold", {})):
            replay_to_the_end(
                broker.port, tmp_path / f"agent-{site}.sqlite3", day, site_id=site, **extra
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            received = {
                site: [
                    Transaction.model_validate_json(p)
                    for topic, p in sub.snapshot()
                    if topic.startswith(f"ev/v1/{site}/") and topic.endswith("/transaction")
                ]
                for site in ("primed", "cold")
            }
            if any(t.transaction_state.value == "Ended" for t in received["primed"]):
                break
            time.sleep(0.2)
    finally:
        sub.close()
    assert received["cold"] == []
    states = [t.transaction_state.value for t in received["primed"]]
    assert states[0] == "Started"
    assert states[-1] == "Ended"
    assert received["primed"][0].start_time == datetime(2024, 7, 9, 14, 0, tzinfo=UTC)
