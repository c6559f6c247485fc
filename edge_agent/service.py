"""``python -m edge_agent run``: wires source, agent, store, publisher, status and metrics.

Shutdown: a first SIGINT/SIGTERM stops intake and drains the queue under a deadline; what is
not acknowledged stays in the store for the next start. A second signal exits at once.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from prometheus_client import CollectorRegistry

from edge_agent.actuators import Actuator, ChargerRating, NoCharger, SimulatedChargers
from edge_agent.agent import EdgeAgent
from edge_agent.control import CommandReceiver, PowerControl, Verdict, VerifyPolicy
from edge_agent.detector import DETECTOR_VERSION, DetectorConfig, MeterDetector
from edge_agent.metrics import EdgeMetrics
from edge_agent.ocpp_adapter import OcppCentralSystem
from edge_agent.offline import InputError, read_file
from edge_agent.priming import primed_meters
from edge_agent.publisher import Publisher
from edge_agent.settings import ChargerKind, EdgeSettings, SourceKind
from edge_agent.simulator import load_real_data
from edge_agent.sources import GatewaySource, build_fleet, paced, replay_file, simulated_fleet
from edge_agent.store import AgentStore
from runtime.httpserver import serve_metrics
from runtime.mqtt import make_connection
from runtime.signals import drain_on_signals
from schemas.status import GatewayState, GatewayStatus
from schemas.topics import EdgeKind, edge_topic

log = logging.getLogger(__name__)
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def status_payload(
    settings: EdgeSettings, state: GatewayState, agent: EdgeAgent | None, store: AgentStore | None
) -> bytes:
    depth, age = store.depth() if store else (None, None)
    last = agent.last_reading_at if agent else None
    status = GatewayStatus(
        gateway_id=settings.gateway_id,
        state=state,
        version=DETECTOR_VERSION,
        meters=len(agent.detectors) if agent else 0,
        queue_depth=depth,
        oldest_queued_age_s=age,
        last_reading_age_s=(time.time() - last) if last else None,
        timestamp=datetime.now(UTC),
    )
    return status.model_dump_json(by_alias=True, exclude_none=True).encode()


def build_actuator(settings: EdgeSettings, rating: ChargerRating) -> Actuator:
    kind = settings.charger
    if kind is ChargerKind.AUTO:
        simulated = settings.source is SourceKind.SIMULATOR
        kind = ChargerKind.SIMULATED if simulated else ChargerKind.NONE
    if kind is ChargerKind.SIMULATED:
        return SimulatedChargers(rating, settings.simulator_charger)
    if kind is ChargerKind.OCPP:
        central = OcppCentralSystem(
            settings.ocpp_charge_points, host=settings.ocpp_host, port=settings.ocpp_port
        )
        central.start()
        return central
    return NoCharger()


def primed_from_history(settings: EdgeSettings, config: DetectorConfig) -> dict[str, MeterDetector]:
    """Detectors (on ``config``) that know their meters' houses from ``EDGE_HISTORY`` (none
    without it); a history that cannot be read stops the agent before it connects, naming the
    file."""
    history = settings.history
    if history is None:
        return {}
    began = time.monotonic()
    tz = ZoneInfo(settings.timezone) if settings.timezone else None
    try:
        primed = primed_meters(lambda: read_file(history, tz), config)
    except (InputError, OSError) as exc:
        raise SystemExit(f"EDGE_HISTORY {settings.history}: {exc}") from None
    log.info(
        "primed %d meters from %s in %.1f s",
        len(primed), settings.history, time.monotonic() - began,
    )  # fmt: skip
    return primed


def run(settings: EdgeSettings) -> int:
    detector_config = settings.detector_config()
    primed = primed_from_history(settings, detector_config)
    registry = CollectorRegistry()
    metrics = EdgeMetrics(registry)
    store = AgentStore(settings.store_path, max_messages=settings.max_queue_messages)
    status_topic = edge_topic(
        settings.site_id, settings.gateway_id, EdgeKind.STATUS, prefix=settings.mqtt.topic_prefix
    )
    conn = make_connection(settings.mqtt, f"edge-{settings.site_id}-{settings.gateway_id}")
    conn.client.will_set(
        status_topic, status_payload(settings, GatewayState.OFFLINE, None, None), qos=1, retain=True
    )
    stop = threading.Event()
    agent_ref: list[EdgeAgent] = []

    def announce(client: mqtt.Client) -> None:
        client.publish(
            status_topic,
            status_payload(
                settings, GatewayState.ONLINE, agent_ref[0] if agent_ref else None, store
            ),
            qos=1,
            retain=True,
        )

    publisher = Publisher(
        store=store,
        connection=conn,
        metrics=metrics,
        window=settings.publish_window,
        on_connect=announce,
    )
    rating = ChargerRating(settings.charger_voltage_v, settings.charger_phases)
    actuator = build_actuator(settings, rating)

    def queue_verdicts(verdicts: list[Verdict]) -> None:
        agent_ref[0].queue_verdicts(verdicts)

    def open_session(asset: str) -> str | None:
        return agent_ref[0].open_session(asset)

    control = PowerControl(
        actuator,
        rating=rating,
        policy=VerifyPolicy(verify_s=settings.command_verify_s),
        emit=queue_verdicts,
        open_session=open_session,
    )
    agent = EdgeAgent(
        site_id=settings.site_id,
        store=store,
        metrics=metrics,
        topic_prefix=settings.mqtt.topic_prefix,
        measurement_interval_s=settings.measurement_interval_s,
        on_commit=publisher.notify,
        control=control,
        charging_power_w=settings.charging_power_w,
        detector_config=detector_config,
        second_look_days=settings.second_look_days,
        second_look_hour_utc=settings.second_look_hour_utc,
        primed=primed,
    )
    agent_ref.append(agent)
    # Persistent session: commands sent while the gateway is away wait (until they expire).
    commands = CommandReceiver(
        make_connection(
            settings.mqtt,
            f"edge-cmd-{settings.site_id}-{settings.gateway_id}",
            clean_start=False,
            session_expiry_s=7 * 86_400,
        ),
        settings.site_id,
        control,
        metrics,
    )
    server = serve_metrics(
        registry,
        host=settings.metrics_host,
        port=settings.metrics_port,
        ready=lambda: publisher.connected,
    )
    log.info("metrics on http://%s:%s/metrics", *server.server_address[:2])

    drain_on_signals(stop, log, forced="unacknowledged messages stay queued")

    def heartbeat() -> None:
        while not stop.wait(settings.heartbeat_s):
            depth, age = store.depth()
            metrics.queue_depth.set(depth)
            metrics.queue_age.set(age or 0.0)
            if conn.client.is_connected():
                announce(conn.client)

    publisher.start()
    control.start()
    commands.start()
    threading.Thread(target=heartbeat, name="edge-heartbeat", daemon=True).start()
    gateway: GatewaySource | None = None
    try:
        if settings.source is SourceKind.GATEWAY:
            gateway = GatewaySource(
                make_connection(settings.gateway_mqtt, f"edge-in-{settings.gateway_id}"),
                settings.gateway_topic,
            )
            gateway.start()
            for batch in gateway.batches(stop):
                agent.flush(batch)
        else:
            if settings.source is SourceKind.FILE:
                if settings.input is None:
                    raise SystemExit("EDGE_INPUT (or --input) is required for the file source")
                tz = ZoneInfo(settings.timezone) if settings.timezone else None
                readings = replay_file(settings.input, speed=0.0, assume_tz=tz)
            else:
                fleet = build_fleet(
                    settings.simulator_meters,
                    days=settings.simulator_days,
                    resolution_s=settings.resolution_s,
                    seed=settings.simulator_seed,
                    real=load_real_data(SHARED_DATA),
                    start=settings.simulator_start,
                )
                chargers = actuator if isinstance(actuator, SimulatedChargers) else None
                readings = simulated_fleet(fleet, chargers)
            paced_from = settings.paced_from.timestamp() if settings.paced_from else None
            agent.process(paced(readings, settings.speed, stop, paced_from=paced_from), stop)
            log.info("source exhausted; %s meters", len(agent.detectors))
            if not settings.exit_when_done:
                stop.wait()
        drained = publisher.drain(timeout=30.0 if not stop.is_set() else 10.0)
        depth, _ = store.depth()
        log.info("stopping: queue drained=%s, %s messages left for the next start", drained, depth)
        if conn.client.is_connected():
            conn.client.publish(
                status_topic,
                status_payload(settings, GatewayState.OFFLINE, agent, store),
                qos=1,
                retain=True,
            ).wait_for_publish(2)
    finally:
        if gateway:
            gateway.stop()
        commands.stop()
        control.stop()
        if isinstance(actuator, OcppCentralSystem):
            actuator.stop()
        publisher.stop()
        server.shutdown()
        store.close()
    return 0
