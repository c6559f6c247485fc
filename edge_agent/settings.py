"""Edge agent settings: environment variables with prefix ``EDGE_`` (nested with ``__``)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import AwareDatetime, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edge_agent.actuators import ChargerBehaviour
from edge_agent.detector import DetectorConfig
from runtime.mqtt import MqttSettings

# An EV's charging power as the detector bounds it (the CLI's ``--charging-power`` too).
EvPower = Annotated[
    float, Field(ge=DetectorConfig.min_ev_power_w, le=DetectorConfig.max_ev_power_w)
]


class SourceKind(StrEnum):
    FILE = "file"
    SIMULATOR = "simulator"
    GATEWAY = "gateway"


class ChargerKind(StrEnum):
    AUTO = "auto"
    NONE = "none"
    OCPP = "ocpp"
    SIMULATED = "simulated"


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EDGE_", env_nested_delimiter="__", frozen=True, use_attribute_docstrings=True
    )

    site_id: str = Field(default="site-1", pattern=r"^[^/#+\s]{1,128}$")
    """Site of this gateway (its topics, and its broker user in the production ACL)."""
    gateway_id: str = Field(default="gateway-1", pattern=r"^[^/#+\s]{1,128}$")
    """This gateway's id (status topic, MQTT client id)."""
    mqtt: MqttSettings = MqttSettings()
    """The utility's broker this gateway publishes to."""
    store_path: Path = Path(".run/edge/agent.sqlite3")
    """Durable queue and detector state (SQLite, survives restarts)."""
    max_queue_messages: int = Field(default=1_000_000, ge=1000)
    """Queue cap; when full the oldest measurements go first, never transactions."""
    publish_window: int = Field(default=500, ge=1, le=65_000)
    """QoS 1 messages in flight at once."""
    measurement_interval_s: float = Field(
        default=60.0, gt=0, le=300, description="Pleevi asks for at least one every 5 min."
    )
    heartbeat_s: float = Field(default=30.0, gt=0)
    """Status message interval."""
    charging_power_w: dict[str, EvPower] = Field(
        default_factory=dict,
        description="The EV charging power (W) of meters where it is known, by meter id "
        '(e.g. {"meter-7": 3600}): measured on a past charge, not a charger\'s nameplate (a car '
        "may draw less). Used from the first reading instead of learnt from the meter's sessions.",
    )
    detector: dict[str, float] = Field(
        default_factory=dict,
        description="Detector thresholds in place of their defaults, by DetectorConfig field "
        '(e.g. {"confirm_s": 2400}), as tuned on the utility\'s own labelled meters '
        "(bench.labelled_accuracy --detector); the sessions' detectorVersion names them.",
    )
    history: Path | None = Field(
        default=None,
        description="Past readings of this gateway's meters (as detect reads them: CSV "
        "timestamp,power_w,energy_wh for one meter, named by the file, or Pleevi measurement "
        "JSON Lines for many, each meter's in time order; naive timestamps in EDGE_TIMEZONE): "
        "a meter met for the first time starts knowing its house (cyclers, AC heat hours, "
        "charging power) instead of learning it over its first week. Meters with saved state "
        "ignore it.",
    )
    second_look_days: int = Field(
        default=14,
        ge=0,
        le=60,
        description="Days of each meter's readings kept (as minute means) for the daily second "
        "look, which publishes late the charges the live detector missed; 0 = no second look.",
    )
    second_look_hour_utc: int = Field(default=4, ge=0, le=23)
    """Hour (UTC, by the readings' time) of the daily second look; meters spread over it."""
    metrics_host: str = "127.0.0.1"
    """Address of /metrics, /healthz, /readyz."""
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0 = any free port.")
    source: SourceKind = SourceKind.SIMULATOR
    """Readings from: simulator, file or gateway (a local MQTT topic)."""
    input: Path | None = None
    """File source: CSV timestamp,power_w,energy_wh or Pleevi JSON Lines."""
    timezone: str | None = Field(default=None, description="Assumed for naive file timestamps.")
    speed: float = Field(default=0.0, ge=0, description="Replay speed x real time; 0 = max.")
    paced_from: AwareDatetime | None = Field(
        default=None, description="Readings before this instant are replayed at full speed."
    )
    simulator_meters: int = Field(default=20, ge=1)
    """Simulated households."""
    simulator_days: int = Field(default=3, ge=1)
    """Simulated days."""
    simulator_seed: int = 0
    """First household's seed; meters are meter-<seed+i>."""
    simulator_start: AwareDatetime | None = Field(
        default=None, description="First simulated instant; default 2024-07-01T00:00Z."
    )
    resolution_s: int = Field(default=60, ge=1, le=900)
    """Simulated meter resolution."""
    gateway_mqtt: MqttSettings = MqttSettings()
    """Gateway source: the local broker the meters publish to."""
    gateway_topic: str = "gateway/+/measurement"
    """Gateway source: the local topic filter of Pleevi measurements."""
    exit_when_done: bool = Field(
        default=True, description="File/simulator sources: exit once all is acknowledged."
    )
    charger: ChargerKind = Field(
        default=ChargerKind.AUTO,
        description="Chargers that power-limit commands go to: simulated, ocpp (charge points "
        "connected to this gateway), none; auto = simulated for the simulator source, else none.",
    )
    simulator_charger: ChargerBehaviour = ChargerBehaviour.OBEDIENT
    """Simulated chargers: obedient, rejecting, or ignoring (accept a limit, keep drawing)."""
    charger_voltage_v: float = Field(default=240.0, gt=0, le=1000)
    """Phase-to-neutral voltage that turns a current limit into watts."""
    charger_phases: int = Field(default=1, ge=1, le=3)
    """Phases a current limit applies to."""
    command_verify_s: float = Field(default=300.0, gt=0)
    """A limit is completed only if the meter shows the EV under it within this (meter time)."""
    ocpp_host: str = "0.0.0.0"  # noqa: S104 - charge points on the gateway's LAN connect here
    """OCPP 1.6J central system: address charge points connect to (ws://host:port/<id>)."""
    ocpp_port: int = Field(default=9000, ge=0, le=65535)
    """OCPP 1.6J central system port."""
    ocpp_charge_points: dict[str, str] = Field(default_factory=dict)
    """Charge point id -> the meter (assetId) it sits behind, as JSON."""

    @field_validator("detector")
    @classmethod
    def _known_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        DetectorConfig.tuned(value)  # refused at startup, naming the threshold
        return value

    def detector_config(self) -> DetectorConfig:
        return DetectorConfig.tuned(self.detector)
