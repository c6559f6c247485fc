"""Pleevi-style edge messages (seed 002): energy measurements and transactions.

Field names on the wire are exactly the seed's camelCase names. The edge detector adds a few
documented extension fields to transactions (``evEnergy``, ``evPower``, ``evPeakPower``,
``meterEnergy``, ``detectorVersion``, ``confidence``, ``sequenceNumber``); they are optional,
so a plain Pleevi transaction still validates.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.timefmt import UtcDatetime

_WIRE = ConfigDict(
    frozen=True,
    extra="forbid",
    validate_by_name=True,
    validate_by_alias=True,
    str_strip_whitespace=True,
)

AssetId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^/#+\s]+$")]
"""Asset ids become topic levels, so MQTT wildcards, slashes and spaces are refused."""


class TransactionState(StrEnum):
    """``transactionState`` values of seed 002."""

    STARTED = "Started"
    UPDATED = "Updated"
    SUSPENDED_EV = "SuspendedEV"
    ENDED = "Ended"


class CurrentType(StrEnum):
    AC = "ac"
    DC = "dc"


class ChargingPhases(StrEnum):
    ONE = "1Phase"
    TWO = "2Phase"
    THREE = "3Phase"


class Measurement(BaseModel):
    """Latest energy status of a metered device; at least every 5 min, ideally every minute."""

    model_config = _WIRE

    asset_id: AssetId = Field(alias="assetId")
    timestamp: UtcDatetime
    energy_wh: float = Field(alias="energyValue", ge=0, description="Energy register in Wh.")
    power_w: float = Field(alias="powerValue", description="Power in W (negative = export).")
    state_of_charge_pct: float | None = Field(
        default=None, alias="currentStateOfCharge", ge=0, le=100
    )


class Transaction(BaseModel):
    """An OCPP-like charging transaction event, plus the edge detector's extension fields."""

    model_config = _WIRE

    asset_id: AssetId = Field(alias="assetId")
    transaction_id: str = Field(alias="transactionId", min_length=1, max_length=128)
    timestamp: UtcDatetime
    transaction_state: TransactionState = Field(alias="transactionState")
    type: CurrentType = CurrentType.AC
    start_time: UtcDatetime = Field(alias="startTime")
    stop_time: UtcDatetime | None = Field(default=None, alias="stopTime")
    no_charging_phases: ChargingPhases | None = Field(default=None, alias="noChargingPhases")
    used_charging_pins: list[str] | None = Field(default=None, alias="usedChargingPins")
    max_power_w: float | None = Field(default=None, alias="maxPower", gt=0)
    requested_min_energy_wh: int | None = Field(default=None, alias="requestedMinEnergy", ge=0)
    requested_max_energy_wh: int | None = Field(default=None, alias="requestedMaxEnergy", ge=0)
    estimated_departure_time: UtcDatetime | None = Field(
        default=None, alias="estimatedDepartureTime"
    )
    priority: int = Field(default=0, ge=0, le=10)
    profile_id: str | None = Field(default=None, alias="profileId")

    # Extension fields written by the edge detector (documented in README "Payloads").
    # Implausible values (negative, stop before start) are accepted here and flagged by the
    # ingestor's pairing: the data-quality contract is "flag, never silently fix or drop".
    ev_energy_wh: float | None = Field(
        default=None, alias="evEnergy", description="EV energy so far (base load removed)."
    )
    ev_power_w: float | None = Field(
        default=None, alias="evPower", description="EV charging power now, base removed."
    )
    ev_peak_power_w: float | None = Field(
        default=None, alias="evPeakPower", description="Peak EV power of the session."
    )
    meter_energy_wh: float | None = Field(
        default=None, alias="meterEnergy", description="Meter register delta so far."
    )
    detector_version: str | None = Field(default=None, alias="detectorVersion")
    confidence: float | None = Field(default=None, ge=0, le=1)
    sequence_number: int | None = Field(
        default=None, alias="sequenceNumber", ge=0, description="Per transaction, from 0."
    )

    @model_validator(mode="after")
    def _energy_request_is_a_range(self) -> Transaction:
        if (
            self.requested_min_energy_wh is not None
            and self.requested_max_energy_wh is not None
            and self.requested_min_energy_wh > self.requested_max_energy_wh
        ):
            raise ValueError("requestedMinEnergy is above requestedMaxEnergy")
        return self
