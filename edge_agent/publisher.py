"""Drains the durable store to the broker: QoS 1, a bounded in-flight window, in order.

A row leaves the store only after its PUBACK. While disconnected nothing new is sent; paho
re-sends its in-flight messages on reconnect, and anything not acknowledged before a crash is
sent again at the next start (at least once; consumers de-duplicate).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.metrics import EdgeMetrics
from edge_agent.store import AgentStore, Queued
from runtime.mqtt import MqttConnection

log = logging.getLogger(__name__)


class Publisher:
    def __init__(
        self,
        *,
        store: AgentStore,
        connection: MqttConnection,
        metrics: EdgeMetrics,
        window: int = 500,
        on_connect: Any = None,
    ) -> None:
        self._store = store
        self._conn = connection
        self._metrics = metrics
        self._window = window
        self._extra_on_connect = on_connect
        self._lock = threading.Lock()
        self._inflight: dict[int, tuple[Queued, float]] = {}
        self._acked: list[Queued] = []
        self._refused: list[tuple[Queued, str]] = []
        self._early: dict[int, ReasonCode] = {}
        self._last_id = 0
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-publisher", daemon=True)
        client = connection.client
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish

    # paho callbacks (network thread) -----------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            log.warning("broker refused connection: %s", rc)
            return
        log.info("connected to broker %s:%s", self._conn.settings.host, self._conn.settings.port)
        self._metrics.connected.set(1)
        self._metrics.reconnects.inc()
        if self._extra_on_connect is not None:
            self._extra_on_connect(client)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        log.warning("disconnected from broker: %s", rc)
        self._metrics.connected.set(0)
        self._connected.clear()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        with self._lock:
            entry = self._inflight.pop(mid, None)
            if entry is None:
                # The PUBACK beat the registration in _send_more: settle it there.
                self._early[mid] = rc
                return
            self._settle_one(entry, rc)
        self._wake.set()

    def _settle_one(self, entry: tuple[Queued, float], rc: ReasonCode) -> None:
        item, sent = entry
        if rc.is_failure:
            self._refused.append((item, str(rc)))
        else:
            self._acked.append(item)
            self._metrics.publish_latency.observe(time.monotonic() - sent)

    # publisher thread -------------------------------------------------------------------------
    def start(self) -> None:
        self._conn.start()
        self._thread.start()

    def notify(self) -> None:
        """New rows were committed: publish them now rather than at the next poll."""
        self._wake.set()

    def _settle(self) -> None:
        with self._lock:
            acked, self._acked = self._acked, []
            refused, self._refused = self._refused, []
        self._store.acknowledge(item.id for item in acked)
        for item in acked:
            self._metrics.published.labels(item.kind).inc()
        for item, reason in refused:
            log.error("broker refused message %s on %s: %s", item.id, item.topic, reason)
            self._store.reject(item, reason)
            self._metrics.rejected.inc()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            try:
                self._settle()
                if self._connected.is_set():
                    self._send_more()
            except Exception:  # the publisher must survive a bad row or a store hiccup
                log.exception("publisher iteration failed")
                time.sleep(0.5)
        self._settle()

    def _send_more(self) -> None:
        with self._lock:
            room = self._window - len(self._inflight)
        if room <= 0:
            return
        for item in self._store.pending(self._last_id, room):
            # Never hold our lock while paho holds its own (its thread calls _on_publish).
            sent = time.monotonic()
            info = self._conn.client.publish(item.topic, item.payload, qos=1)
            with self._lock:
                early = self._early.pop(info.mid, None)
                if early is None:
                    self._inflight[info.mid] = (item, sent)
                else:
                    self._settle_one((item, sent), early)
            self._last_id = item.id
            if info.rc == mqtt.MQTT_ERR_NO_CONN:
                break  # paho keeps it and sends it on reconnect

    def drain(self, timeout: float) -> bool:
        """Wait until everything queued is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._wake.set()
            depth, _ = self._store.depth()
            with self._lock:
                idle = not self._inflight and not self._acked
            if depth == 0 and idle:
                return True
            time.sleep(0.05)
        return False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._conn.stop()
