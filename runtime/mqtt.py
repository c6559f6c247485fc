"""MQTT connection settings and a paho client factory shared by every service."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field, SecretStr


class MqttSettings(BaseModel):
    """Where the broker is and how to authenticate (env: ``<SERVICE>_MQTT__HOST`` etc.)."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    host: str = "127.0.0.1"
    """Broker host name or address."""
    port: int = Field(default=1883, ge=1, le=65535)
    """Broker port (8883 is the TLS listener of mosquitto.conf)."""
    username: str | None = None
    """Broker user name."""
    password: SecretStr | None = None
    """Broker password."""
    tls_ca: Path | None = Field(default=None, description="CA bundle; enables TLS when set.")
    tls_cert: Path | None = Field(default=None, description="Client certificate (optional).")
    tls_key: Path | None = Field(default=None, description="Client key (optional).")
    tls_insecure: bool = Field(default=False, description="Skip hostname check (tests only).")
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    """MQTT keepalive."""
    topic_prefix: str = "ev/v1"
    """Root of the topic tree."""


@dataclass
class MqttConnection:
    """A paho MQTT 5 client with what it needs to (re)connect; paho's loop reconnects."""

    client: mqtt.Client
    settings: MqttSettings
    clean_start: bool
    properties: Properties

    def start(self) -> None:
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=self.clean_start,
            properties=self.properties,
        )
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def make_connection(
    settings: MqttSettings,
    client_id: str,
    *,
    clean_start: bool = True,
    session_expiry_s: int = 0,
) -> MqttConnection:
    """A client configured from ``settings`` (credentials, TLS, backoff); not yet connected."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        reconnect_on_failure=True,
    )
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls_ca:
        client.tls_set(
            ca_certs=str(settings.tls_ca),
            certfile=str(settings.tls_cert) if settings.tls_cert else None,
            keyfile=str(settings.tls_key) if settings.tls_key else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        client.tls_insecure_set(settings.tls_insecure)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session_expiry_s:
        properties.SessionExpiryInterval = session_expiry_s
    return MqttConnection(client, settings, clean_start, properties)
