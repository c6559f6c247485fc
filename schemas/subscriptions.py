"""The subscription contract (seed 001's EntityType / EntityId filter) of the HTTP API and CLI.

``EntityType`` None means every event and takes no ids; any other type needs at least one id.
A new subscription receives events from the moment it is created; ``StartPosition`` (an outbox
position, 0 = the oldest event still kept) asks for earlier ones explicitly: they are replayed
to its topic, in outbox order, alongside the live events.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.itron import EntityIds, EntityType
from schemas.timefmt import UtcDatetime

_WIRE = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)


class SubscriptionState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class EntityFilter(BaseModel):
    """Seed 001's filter: ``EntityType`` None is every event and takes no ids; any other type
    needs at least one. A subscription's, and a subscriber's control scope (seed 003)."""

    model_config = _WIRE

    entity_type: EntityType = Field(default=EntityType.NONE, alias="EntityType")
    entity_ids: EntityIds = Field(default_factory=list, alias="EntityId")

    @field_validator("entity_ids", mode="before")
    @classmethod
    def _single_id_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _ids_fit_the_type(self) -> EntityFilter:
        if self.entity_type is EntityType.NONE and self.entity_ids:
            raise ValueError("EntityType None matches every event and takes no EntityId")
        if self.entity_type is not EntityType.NONE and not self.entity_ids:
            raise ValueError(f"EntityType {self.entity_type.value} needs at least one EntityId")
        return self


class SubscriptionRequest(EntityFilter):
    """Body of ``POST /dpss/api/v1/subscriptions``."""

    start_position: int | None = Field(
        default=None,
        alias="StartPosition",
        ge=0,
        description="Deliver outbox events after this position (0 = all kept); default: now.",
    )


class SubscriptionView(BaseModel):
    """A subscription as the API and CLI show it."""

    model_config = _WIRE

    subscription_id: str = Field(alias="SubscriptionId")
    subscriber_id: str = Field(alias="DataSubscriberId")
    entity_type: EntityType = Field(alias="EntityType")
    entity_ids: list[str] = Field(alias="EntityId")
    topic: str = Field(alias="Topic")
    state: SubscriptionState = Field(alias="State")
    start_position: int = Field(
        alias="StartPosition", description="Where its replay of kept history stands."
    )
    created_at: UtcDatetime = Field(alias="CreatedAt")
    updated_at: UtcDatetime = Field(alias="UpdatedAt")
