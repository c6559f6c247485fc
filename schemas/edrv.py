"""eDRV-style session power management (seed 003): set/clear a power limit, and its actions.

An action goes ``requested`` -> ``completed`` | ``failed``; each change is a status event
``session.set_power_limit.<status>`` (or ``session.clear_power_limit.<status>``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.timefmt import UtcDatetime

_OURS = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

MAX_POWER_LIMIT_W = 1_000_000.0
"""Anything above 1 MW is not a session limit but a typo."""
MAX_CURRENT_LIMIT_A = 1_000.0


class LimitUnit(StrEnum):
    POWER = "power"
    CURRENT = "current"


class ActionType(StrEnum):
    SET_POWER_LIMIT = "session.set_power_limit"
    CLEAR_POWER_LIMIT = "session.clear_power_limit"


class ActionStatus(StrEnum):
    REQUESTED = "requested"
    COMPLETED = "completed"
    FAILED = "failed"


class PowerLimit(BaseModel):
    """Body of ``sessions/{id}/set_power_limit``: watts for ``power``, amperes for ``current``."""

    model_config = _OURS

    unit: LimitUnit
    limit: float = Field(gt=0)

    @model_validator(mode="after")
    def _limit_is_plausible(self) -> PowerLimit:
        ceiling = MAX_POWER_LIMIT_W if self.unit is LimitUnit.POWER else MAX_CURRENT_LIMIT_A
        if self.limit > ceiling:
            raise ValueError(f"limit {self.limit} is above the plausible maximum {ceiling}")
        return self


class StatusChange(BaseModel):
    """One step of an action's history."""

    model_config = _OURS

    status: ActionStatus
    reason: str | None = None
    at: UtcDatetime


class Action(BaseModel):
    """The action record returned by the API and carried by status events."""

    model_config = _OURS

    id: str = Field(alias="_id")
    type: ActionType
    status: ActionStatus
    session: str | None = Field(default=None, description="The session's transactionId.")
    chargestation: str | None = Field(
        default=None, description="The meter (assetId) whose charger is controlled."
    )
    connector: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = Field(default=None, description="Why an action failed.")
    measured_ev_power_w: float | None = Field(
        default=None, alias="measuredEvPower", description="EV power the meter saw (W)."
    )
    expires_at: UtcDatetime | None = Field(
        default=None,
        alias="expiresAt",
        description="A command not delivered to the charger by then lapses.",
    )
    created_at: UtcDatetime = Field(alias="createdAt")
    updated_at: UtcDatetime = Field(alias="updatedAt")
    history: list[StatusChange] | None = None


class ActionResponse(BaseModel):
    """The ``{"ok", "message", "result"}`` envelope of seed 003."""

    model_config = _OURS

    ok: bool
    message: str = ""
    result: Action | None = None


class ActionEvent(BaseModel):
    """A status event (webhook body and MQTT status message)."""

    model_config = _OURS

    event: str = Field(pattern=r"^session\.(set|clear)_power_limit\.(requested|completed|failed)$")
    action: Action
    timestamp: UtcDatetime

    @classmethod
    def of(cls, action: Action) -> ActionEvent:
        return cls(
            event=f"{action.type.value}.{action.status.value}",
            action=action,
            timestamp=action.updated_at,
        )


class CommandResult(BaseModel):
    """What the edge agent answers on its ``command-result`` topic."""

    model_config = _OURS

    action_id: str = Field(alias="actionId")
    transaction_id: str = Field(alias="transactionId")
    status: ActionStatus
    reason: str | None = None
    measured_ev_power_w: float | None = Field(default=None, alias="measuredEvPower", ge=0)
    timestamp: UtcDatetime


class EdgeCommand(BaseModel):
    """A power-limit command on an asset's ``command`` topic."""

    model_config = _OURS

    action_id: str = Field(alias="actionId")
    transaction_id: str = Field(alias="transactionId")
    type: ActionType
    data: PowerLimit | None = None
    issued_at: UtcDatetime = Field(alias="issuedAt")
    expires_at: UtcDatetime = Field(
        alias="expiresAt", description="Not applied after this instant (also the MQTT expiry)."
    )

    @model_validator(mode="after")
    def _set_has_a_limit(self) -> EdgeCommand:
        if (self.type is ActionType.SET_POWER_LIMIT) != (self.data is not None):
            raise ValueError("set_power_limit carries a limit, clear_power_limit none")
        return self
