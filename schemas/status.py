"""Gateway health (seed 004's heartbeat and connectivity signals), retained per gateway."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.timefmt import UtcDatetime


class GatewayState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class GatewayStatus(BaseModel):
    """Retained on the gateway's ``status`` topic; the Last Will sets ``state`` offline."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    gateway_id: str = Field(alias="gatewayId", min_length=1)
    state: GatewayState
    version: str
    meters: int = Field(ge=0)
    queue_depth: int | None = Field(default=None, alias="queueDepth", ge=0)
    oldest_queued_age_s: float | None = Field(default=None, alias="oldestQueuedAgeSeconds", ge=0)
    last_reading_age_s: float | None = Field(default=None, alias="lastReadingAgeSeconds", ge=0)
    timestamp: UtcDatetime
