"""Streamer settings: environment variables with prefix ``STREAM_`` (nested with ``__``)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.mqtt import MqttSettings

DEFAULT_EXPORT_DIR = Path(".run/exports")


class BrokerFiles(BaseModel):
    """Where to keep Mosquitto's password file and ACL current with the subscriptions; the
    broker is told to reload (SIGHUP to the pid in ``reload_pidfile``) after each rewrite."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    passwd: Path | None = None
    """Mosquitto password file to write (with the subscribers' users)."""
    acl: Path | None = None
    """Mosquitto ACL file to write (each subscriber reads its own topics)."""
    base_passwd: Path | None = Field(default=None, description="Service and gateway users.")
    base_acl: Path | None = Field(default=None, description="Default: deploy/mosquitto/acl.")
    reload_pidfile: Path | None = None
    """The broker's pid file: SIGHUP after a rewrite."""


class StreamerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAM_", env_nested_delimiter="__", frozen=True, use_attribute_docstrings=True
    )

    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/ev")
    """PostgreSQL/TimescaleDB connection URL."""
    mqtt: MqttSettings = MqttSettings()
    """The broker subscribers read from."""
    client_id: str = Field(default_factory=lambda: f"streamer-{socket.gethostname()}")
    """MQTT client id, one per replica."""
    batch_size: int = Field(default=500, ge=1, le=10_000, description="Outbox rows per claim.")
    max_events_per_message: int = Field(default=100, ge=1, le=1000)
    """EVChargingEvents per MQTT message at most."""
    linger_s: float = Field(
        default=0.005,
        ge=0,
        le=1,
        description="Wait after a wake-up so rows arriving together share a payload.",
    )
    poll_interval_s: float = Field(
        default=2.0, gt=0, le=60, description="Fallback when no notification."
    )
    ack_timeout_s: float = Field(default=10.0, gt=0)
    """A delivery not acknowledged by the broker in time is rolled back and retried."""
    stats_interval_s: float = Field(default=5.0, gt=0)
    """Backlog metrics, broker files and replays are looked after this often."""
    http_host: str = "127.0.0.1"
    """Address of the HTTP API."""
    http_port: int = Field(default=8080, ge=0, le=65535, description="0 = any free port.")
    metrics_host: str = "127.0.0.1"
    """Address of /metrics, /healthz, /readyz."""
    metrics_port: int = Field(default=9320, ge=0, le=65535, description="0 = any free port.")
    broker_files: BrokerFiles = BrokerFiles()
    outbox_keep_days: float = Field(
        default=30.0,
        gt=0,
        description="Delivered events stay this long in the outbox, the source of StartPosition "
        "replays (the charging events themselves stay 13 months).",
    )
    export_dir: Path = Field(
        default=DEFAULT_EXPORT_DIR,
        description="Where batch-export files are written and served from (shared storage "
        "when several streamers run).",
    )
    export_keep_days: float = Field(
        default=7.0,
        gt=0,
        description="Export files are deleted this long after they were written (a download "
        "then answers 410 Gone).",
    )
    export_max_rows: int = Field(
        default=50_000_000, ge=1, description="A batch request matching more events fails."
    )
    export_workers: int = Field(default=1, ge=0, le=8, description="Concurrent export jobs.")
    command_expiry_s: float = Field(default=60.0, gt=0, le=3600)
    """A power-limit command not delivered to its edge agent within this lapses (MQTT expiry)."""
    command_answer_within_s: float = Field(
        default=600.0,
        gt=0,
        description="An action with no verdict from the edge agent by then fails (must exceed "
        "the command expiry plus the agent's EDGE_COMMAND_VERIFY_S).",
    )
    control_poll_s: float = Field(default=1.0, gt=0, le=60)
    """Overdue actions, unsent commands, status events and webhook retries looked at this often."""
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    """A webhook receiver must answer within this."""
    webhook_give_up_hours: float = Field(default=24.0, gt=0)
    """A webhook event still refused after this long is given up (counted and logged)."""
    webhook_private_targets: bool = False
    """Allow webhook URLs on loopback, private or link-local addresses (on-premises receivers)."""
