"""Ingestor settings: environment variables with prefix ``INGEST_`` (nested with ``__``)."""

from __future__ import annotations

import socket

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.migrations import Flavour
from runtime.mqtt import MqttSettings


class IngestorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INGEST_", env_nested_delimiter="__", frozen=True, use_attribute_docstrings=True
    )

    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/ev")
    """PostgreSQL/TimescaleDB connection URL."""
    db_flavour: Flavour = Flavour.AUTO
    """auto (TimescaleDB when the extension is available), timescale or postgres."""
    use_copy: bool = Field(default=True, description="False for servers without COPY FROM STDIN.")
    mqtt: MqttSettings = MqttSettings()
    """The broker the gateways publish to."""
    client_id: str = Field(
        default_factory=lambda: f"ingestor-{socket.gethostname()}",
        description="Fixed per replica: the broker keeps its session (and unacked messages).",
    )
    share_group: str = Field(default="", pattern=r"^[^/#+\s]{0,64}$")
    """Shared-subscription group that replicas split the load in; empty: a plain subscription
    (one ingestor). Mosquitto 2.0 does not restore shared subscriptions when it restarts, so
    what is published before the replicas subscribe again is lost; a plain subscription is
    restored with the session."""
    session_expiry_s: int = Field(default=86_400, ge=0)
    """How long the broker keeps a stopped replica's session and messages."""
    batch_size: int = Field(default=1000, ge=1, le=20_000)
    """Messages per database transaction at most."""
    batch_delay_s: float = Field(default=0.1, gt=0, le=10)
    """Longest wait to fill a batch."""
    max_inflight: int = Field(
        default=10_000,
        ge=1,
        le=65_535,
        description="MQTT Receive Maximum = queue bound; several batches, so the broker keeps "
        "sending while one commits.",
    )
    writers: int = Field(default=2, ge=1, le=16)
    """Writer threads (one database connection each), fed by topic so that one meter's
    transactions keep their order: one decodes while another commits."""
    max_payload_bytes: int = Field(default=65_536, ge=256)
    """Larger messages are dead-lettered."""
    max_open_hours: float = Field(
        default=48.0,
        gt=0,
        description="A session closes as orphaned when its meter reports readings this long "
        "after the session's last activity without an Ended.",
    )
    silent_meter_hours: float = Field(
        default=168.0, gt=0, description="...or when its meter has been silent this long."
    )
    sweep_interval_s: float = Field(default=60.0, gt=0)
    """Orphan sessions, partitions and retention are looked after this often."""
    drain_timeout_s: float = Field(default=10.0, ge=0)
    """On SIGTERM, how long to finish the batch in hand."""
    metrics_host: str = "127.0.0.1"
    """Address of /metrics, /healthz, /readyz."""
    metrics_port: int = Field(default=9310, ge=0, le=65535, description="0 = any free port.")
