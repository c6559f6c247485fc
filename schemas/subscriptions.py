"""The subscription contract (seed 001's EntityType / EntityId filter) of the HTTP API and CLI,
and the control scope (seed 003) the operator grants a subscriber, which may also name feeders.

``EntityType`` None means every event and takes no ids; any other type needs at least one id.
A new subscription receives events from the moment it is created; ``StartPosition`` (an outbox
position, 0 = the oldest event still kept) asks for earlier ones explicitly: they are replayed
to its topic, in outbox order, alongside the live events.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.itron import EntityIds, EntityType, folded_member
from schemas.timefmt import UtcDatetime

_WIRE = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)


class SubscriptionState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class ControlEntityType(StrEnum):
    """What a control scope (seed 003) may name: seed 001's entity types, and the feeder, whose
    load a DERMS curtails as one (the registry gives each meter's ``FeederId``)."""

    SERVICE_POINT = EntityType.SERVICE_POINT.value
    METER = EntityType.METER.value
    ESN = EntityType.ESN.value
    TRANSFORMER = EntityType.TRANSFORMER.value
    PREMISES = EntityType.PREMISES.value
    FEEDER = "Feeder"
    NONE = EntityType.NONE.value

    @classmethod
    def _missing_(cls, value: object) -> ControlEntityType | None:
        return folded_member(cls, value)


class _Entities(BaseModel):
    """``EntityType`` None is every event and takes no ids; any other type needs at least one."""

    model_config = _WIRE

    entity_type: EntityType | ControlEntityType
    entity_ids: EntityIds = Field(default_factory=list, alias="EntityId")

    @field_validator("entity_ids", mode="before")
    @classmethod
    def _single_id_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _ids_fit_the_type(self) -> _Entities:
        kind = self.entity_type.value
        if kind == EntityType.NONE.value and self.entity_ids:
            raise ValueError("EntityType None matches every event and takes no EntityId")
        if kind != EntityType.NONE.value and not self.entity_ids:
            raise ValueError(f"EntityType {kind} needs at least one EntityId")
        return self


class EntityFilter(_Entities):
    """Seed 001's filter, a subscription's."""

    entity_type: EntityType = Field(default=EntityType.NONE, alias="EntityType")


class ControlScope(_Entities):
    """The sessions a subscriber may limit (seed 003): those on these entities as of their
    start."""

    entity_type: ControlEntityType = Field(default=ControlEntityType.NONE, alias="EntityType")


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
