"""Running the project's services as real processes in tests, and publishing to them."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from runtime.localservers import free_port
from runtime.processes import ROOT, ServiceProcess, wait_until

__all__ = ["ROOT", "ServiceProcess", "wait_until"]


def unique_prefix() -> str:
    """A topic prefix of its own, so tests sharing a broker never see each other's messages."""
    return f"t{uuid.uuid4().hex[:10]}/v1"


def ingestor_env(
    *, dsn: str, port: int, prefix: str, client_id: str, group: str = "", **extra: str
) -> dict[str, str]:
    return {
        "INGEST_DATABASE_URL": dsn,
        "INGEST_MQTT__PORT": str(port),
        "INGEST_MQTT__TOPIC_PREFIX": prefix,
        "INGEST_CLIENT_ID": client_id,
        "INGEST_SHARE_GROUP": group,
        "INGEST_METRICS_PORT": "0",
        "INGEST_SWEEP_INTERVAL_S": "1",
        **extra,
    }


def publish_all(port: int, messages: Iterable[tuple[str, bytes]], *, window: int = 1000) -> int:
    """Publish at QoS 1 and return once the broker acknowledged every message."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=60)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
    return len(infos)


T0 = datetime(2026, 5, 4, 18, 0, tzinfo=UTC)


def measurement(prefix: str, asset: str, minute: int, *, site: str = "site-1") -> tuple[str, bytes]:
    ts = (T0 + timedelta(minutes=minute)).isoformat()
    body = {"assetId": asset, "timestamp": ts, "energyValue": 1000.0 + minute, "powerValue": 500.0}
    return f"{prefix}/{site}/{asset}/measurement", orjson.dumps(body)


def transaction(  # noqa: PLR0917 (mirrors the message fields)
    prefix: str,
    asset: str,
    transaction_id: str,
    state: str,
    seq: int,
    minute: float,
    *,
    start_minute: float = 0,
    stop_minute: float | None = None,
    site: str = "site-1",
    **extension: float,
) -> tuple[str, bytes]:
    body: dict[str, Any] = {
        "assetId": asset,
        "transactionId": transaction_id,
        "timestamp": (T0 + timedelta(minutes=minute)).isoformat(),
        "transactionState": state,
        "startTime": (T0 + timedelta(minutes=start_minute)).isoformat(),
        "sequenceNumber": seq,
        **extension,
    }
    if stop_minute is not None:
        body["stopTime"] = (T0 + timedelta(minutes=stop_minute)).isoformat()
    return f"{prefix}/{site}/{asset}/transaction", orjson.dumps(body)


def session(
    prefix: str, asset: str, transaction_id: str, offset: int = 0
) -> list[tuple[str, bytes]]:
    """A whole session: Started, SuspendedEV, Updated, Ended (2 h, 12 kWh, peak 7.4 kW)."""
    o = offset
    return [
        transaction(prefix, asset, transaction_id, "Started", 0, o, start_minute=o, evPower=7200.0),
        transaction(prefix, asset, transaction_id, "SuspendedEV", 1, o + 60, start_minute=o,
                    evPower=0.0, evEnergy=7100.0, evPeakPower=7300.0),
        transaction(prefix, asset, transaction_id, "Updated", 2, o + 75, start_minute=o,
                    evPower=7000.0, evEnergy=7100.0),
        transaction(prefix, asset, transaction_id, "Ended", 3, o + 150, start_minute=o,
                    stop_minute=o + 120, evEnergy=12000.0, evPeakPower=7400.0,
                    meterEnergy=14000.0),
    ]  # fmt: skip


def scrape(url: str) -> dict[str, float]:
    """Prometheus text exposition -> {'name{labels}': value}."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def streamer_env(
    *, dsn: str, port: int, prefix: str, http_port: int, client_id: str = "streamer", **extra: str
) -> dict[str, str]:
    return {
        "STREAM_DATABASE_URL": dsn,
        "STREAM_MQTT__PORT": str(port),
        "STREAM_MQTT__TOPIC_PREFIX": prefix,
        "STREAM_CLIENT_ID": client_id,
        "STREAM_HTTP_PORT": str(http_port),
        "STREAM_METRICS_PORT": "0",
        "STREAM_STATS_INTERVAL_S": "0.5",
        **extra,
    }


def ready(process: ServiceProcess) -> bool:
    try:
        url = process.metrics_url().replace("/metrics", "/readyz")
        return httpx.get(url, timeout=2).status_code == 200
    except (httpx.HTTPError, TimeoutError):
        return False


def start_ingestor_and_streamer(
    *, dsn: str, port: int, prefix: str, logs: Path, name: str, **streamer_extra: str
) -> tuple[ServiceProcess, ServiceProcess, int]:
    """An ingestor and a streamer on the broker, both ready; with the streamer's API port."""
    ingestor = ServiceProcess(
        "ingestor",
        ingestor_env(dsn=dsn, port=port, prefix=prefix, client_id=f"ing-{name}"),
        logs / "ingestor.log",
    ).start()
    http_port = free_port()
    streamer = ServiceProcess(
        "streamer",
        streamer_env(
            dsn=dsn,
            port=port,
            prefix=prefix,
            http_port=http_port,
            client_id=f"streamer-{name}",
            **streamer_extra,
        ),
        logs / "streamer.log",
    ).start()
    wait_until(lambda: "subscribed" in ingestor.log(), timeout=30, what="the ingestor")
    wait_until(lambda: ready(streamer), timeout=30, what="the streamer")
    return ingestor, streamer, http_port


class EventCollector:
    """A subscriber's MQTT client that records every message it receives (``payloads``) and
    the EVChargingEvents among them (``messages``)."""

    def __init__(
        self,
        port: int,
        topics: Iterable[str],
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        persistent: bool = False,
        tls_ca: Path | None = None,
    ) -> None:
        self.messages: list[tuple[str, list[dict[str, Any]], list[tuple[str, str]]]] = []
        self.payloads: list[bytes] = []
        self.granted: list[int] = []
        self.refused: str | None = None
        self._topics = list(topics)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"sub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if username:
            self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        props = None
        if persistent:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=not persistent, properties=props)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            return
        if self._topics:
            client.subscribe([(topic, 1) for topic in self._topics])

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _m: Any, codes: Any, _p: Any) -> None:
        self.granted = [code.value for code in codes]

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.payloads.append(message.payload)
        body = orjson.loads(message.payload)
        if "EVChargingEvents" in body:
            props = getattr(message.properties, "UserProperty", [])
            self.messages.append((message.topic, body["EVChargingEvents"], list(props)))

    def subscribed(self) -> bool:
        return len(self.granted) == len(self._topics)

    def event_ids(self, topic: str | None = None) -> list[str]:
        """Event ids in arrival order (with any redelivered duplicates)."""
        return [
            value
            for got_topic, _, props in list(self.messages)
            if topic is None or got_topic == topic
            for name, value in props
            if name == "event-id"
        ]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class TcpRelay:
    """A TCP relay in front of the broker: ``cut()`` takes whoever connects through it offline
    (connections dropped, new ones refused) until ``restore()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.online = threading.Event()
        self.online.set()
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.online.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.online.clear()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._open.clear()

    def restore(self) -> None:
        self.online.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a broker certificate for 127.0.0.1/localhost and a client certificate, made with
    the openssl command line; their paths by name."""
    directory.mkdir(parents=True, exist_ok=True)
    names = ("ca.key", "ca.crt", "server.key", "server.crt", "client.key", "client.crt")
    paths = {name: directory / name for name in names}

    def openssl(*argv: str) -> None:
        subprocess.run(["openssl", *argv], check=True, capture_output=True, cwd=directory)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=ev-test-ca")  # fmt: skip
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                            ("client", "extendedKeyUsage=clientAuth")):  # fmt: skip
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/CN={name}")  # fmt: skip
        (directory / f"{name}.ext").write_text(extension + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{name}.crt",
                "-extfile", f"{name}.ext")  # fmt: skip
    return paths
