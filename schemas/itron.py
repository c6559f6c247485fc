"""Itron-style EV charging events (seeds 000 and 001).

Two spellings exist in the seeds and both are kept exactly:

* seed 000 (on-demand / batch, pull): ``ServicePointId``, ``MeterId``, ``ElectronicSerialNumber``,
  ``TransformerId``, ``PremiseId``, ``FeederId``;
* seed 001 (streaming, push): ``ServicePointID``, ``MeterID``, ``ESN``, ``TransformerID``,
  ``PremiseID``, wrapped as ``{"EVChargingEvents": [...]}``.

Seed quirks and how they are handled: seed 000's example marks nulls as ``{}`` (read as null,
written as null); seed 001's example sends numbers as strings (read as numbers, written as
numbers); both examples carry trailing commas (not JSON: refused by any JSON parser); seed 000's
on-demand example has timestamps without an offset (refused: the contract requires one).
``ChargeDuration`` is in hours; the table says integer but the examples show ``1.69``, so it is
a real number.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from schemas.timefmt import QueryInstant, UtcDatetime


def _empty_object_is_null(value: Any) -> Any:
    return None if value == {} else value


Nullable = BeforeValidator(_empty_object_is_null)
OptStr = Annotated[str | None, Nullable]
OptTime = Annotated[UtcDatetime | None, Nullable]
OptPositive = Annotated[Annotated[float, Field(ge=0)] | None, Nullable]

_OURS = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)


_E = TypeVar("_E", bound=StrEnum)


class EntityType(StrEnum):
    """Filter dimension of seeds 000/001 (``Servicepoint, Meter, ESN, Transformer, premises,
    None``); matched case-insensitively on input."""

    SERVICE_POINT = "ServicePoint"
    METER = "Meter"
    ESN = "ESN"
    TRANSFORMER = "Transformer"
    PREMISES = "Premises"
    NONE = "None"

    @classmethod
    def _missing_(cls, value: object) -> EntityType | None:
        return folded_member(cls, value)


def folded_member(cls: type[_E], value: object) -> _E | None:
    """The member of ``cls`` whose value is ``value`` whatever its case and surrounding space."""
    if isinstance(value, str):
        folded = value.strip().lower()
        for member in cls:
            if member.value.lower() == folded:
                return member
    return None


class ChargingEventRecord(BaseModel):
    """One charging event as the on-demand API and the batch export give it (seed 000)."""

    model_config = _OURS

    received_time: OptTime = Field(default=None, alias="ReceivedTime")
    service_point_id: OptStr = Field(default=None, alias="ServicePointId")
    meter_id: OptStr = Field(default=None, alias="MeterId")
    meter_number: OptStr = Field(default=None, alias="MeterNumber")
    esn: OptStr = Field(default=None, alias="ElectronicSerialNumber")
    transformer_id: OptStr = Field(default=None, alias="TransformerId")
    premise_id: OptStr = Field(default=None, alias="PremiseId")
    feeder_id: OptStr = Field(default=None, alias="FeederId")
    charge_start_time: UtcDatetime = Field(alias="ChargeStartTime")
    charge_end_time: OptTime = Field(default=None, alias="ChargeEndTime")
    charge_w: OptPositive = Field(default=None, alias="ChargeW")
    charge_duration_h: OptPositive = Field(default=None, alias="ChargeDuration")
    charge_energy_wh: OptPositive = Field(default=None, alias="ChargeEnergy")


CSV_COLUMNS: tuple[str, ...] = (
    "ReceivedTime",
    "ServicePointId",
    "MeterId",
    "MeterNumber",
    "ElectronicSerialNumber",
    "TransformerId",
    "PremiseId",
    "ChargeStartTime",
    "ChargeEndTime",
    "ChargeW",
    "ChargeDuration",
    "ChargeEnergy",
    "FeederId",
)
"""Seed 000's CSV header order; FeederId (in the on-demand example, not the CSV) comes last."""
TIME_COLUMNS = frozenset({"ReceivedTime", "ChargeStartTime", "ChargeEndTime"})
NUMBER_COLUMNS = frozenset({"ChargeW", "ChargeDuration", "ChargeEnergy"})


class StreamKind(StrEnum):
    START = "start"
    END = "end"


class StreamEvent(BaseModel):
    """One streamed event of seed 001: a start message or an end message, nothing else.

    A start sets ChargeStartTime and ChargeW; an end sets ChargeEndTime, ChargeDuration and
    ChargeEnergy; "the other data values will be null".
    """

    model_config = _OURS

    service_point_id: OptStr = Field(default=None, alias="ServicePointID")
    meter_id: OptStr = Field(default=None, alias="MeterID")
    meter_number: OptStr = Field(default=None, alias="MeterNumber")
    esn: OptStr = Field(default=None, alias="ESN")
    transformer_id: OptStr = Field(default=None, alias="TransformerID")
    premise_id: OptStr = Field(default=None, alias="PremiseID")
    received_time: OptTime = Field(default=None, alias="ReceivedTime")
    charge_start_time: OptTime = Field(default=None, alias="ChargeStartTime")
    charge_end_time: OptTime = Field(default=None, alias="ChargeEndTime")
    charge_w: OptPositive = Field(default=None, alias="ChargeW")
    charge_duration_h: OptPositive = Field(default=None, alias="ChargeDuration")
    charge_energy_wh: OptPositive = Field(default=None, alias="ChargeEnergy")

    @property
    def kind(self) -> StreamKind:
        return StreamKind.START if self.charge_start_time is not None else StreamKind.END

    @model_validator(mode="after")
    def _is_start_or_end(self) -> StreamEvent:
        start_fields = (self.charge_start_time, self.charge_w)
        end_fields = (self.charge_end_time, self.charge_duration_h, self.charge_energy_wh)
        is_start = self.charge_start_time is not None and all(v is None for v in end_fields)
        is_end = self.charge_end_time is not None and all(v is None for v in start_fields)
        if not (is_start or is_end):
            raise ValueError(
                "an event is either a start (ChargeStartTime, ChargeW) or an end "
                "(ChargeEndTime, ChargeDuration, ChargeEnergy), with the other values null"
            )
        return self


class StreamPayload(BaseModel):
    """The streaming envelope ``{"EVChargingEvents": [...]}`` of seed 001."""

    model_config = _OURS

    events: list[StreamEvent] = Field(alias="EVChargingEvents", min_length=1)


Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
"""A registry identifier as a filter names it: printable, no control characters."""

EntityIds = Annotated[list[Identifier], Field(max_length=10_000)]


class OnDemandRequest(BaseModel):
    """Body of ``POST .../on-demand`` (seed 000's parameter table)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    start_event_date: QueryInstant | None = Field(default=None, alias="StartEventDate")
    end_event_date: QueryInstant | None = Field(default=None, alias="EndEventDate")
    start_received: QueryInstant | None = Field(
        default=None,
        alias="StartReceivedDatetime",
        validation_alias=AliasChoices("StartReceivedDatetime", "StartReceivedDateTime"),
    )
    end_received: QueryInstant | None = Field(
        default=None,
        alias="EndReceivedDatetime",
        validation_alias=AliasChoices("EndReceivedDatetime", "EndReceivedDateTime"),
    )
    entity_type: EntityType = Field(default=EntityType.NONE, alias="EntityType")
    entity_ids: EntityIds = Field(default_factory=list, alias="EntityId")
    page_token: str | None = Field(
        default=None,
        alias="PageToken",
        max_length=1024,
        description="The Next-Page-Token header of the previous page; the other fields must "
        "be those of that request.",
    )

    @field_validator("entity_ids", mode="before")
    @classmethod
    def _single_id_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class FileType(StrEnum):
    CSV = "csv"
    JSON = "json"
    PARQUET = "parquet"
    ORC = "orc"

    @classmethod
    def _missing_(cls, value: object) -> FileType | None:
        if isinstance(value, str):
            folded = value.strip().lower()
            return next((m for m in cls if m.value == folded), None)
        return None


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


Token = Annotated[
    Annotated[str, Field(max_length=100_000, pattern=r"^[^\x00-\x1f\x7f]*$")] | None,
    BeforeValidator(_blank_is_none),
    Field(description="One id or a comma-separated list; empty = no filter."),
]
TokenInstant = Annotated[QueryInstant | None, BeforeValidator(_blank_is_none)]


class BatchTokens(BaseModel):
    """The ``tokens`` of seed 000's batch request; an empty string means no filter."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    start_event_date: TokenInstant = Field(default=None, alias="StartEventDate")
    end_event_date: TokenInstant = Field(default=None, alias="EndEventDate")
    start_received: TokenInstant = Field(default=None, alias="StartReceivedDateTime")
    end_received: TokenInstant = Field(default=None, alias="EndReceivedDateTime")
    device: Token = Field(default=None, alias="Device")
    esn: Token = Field(default=None, alias="ElectronicSerialNumber")
    meter: Token = Field(default=None, alias="Meter")
    meter_number: Token = Field(default=None, alias="MeterNumber")
    service_point: Token = Field(default=None, alias="ServicePoint")
    premises: Token = Field(default=None, alias="Premises")
    transformer: Token = Field(default=None, alias="Transformer")
    feeder: Token = Field(default=None, alias="Feeder")


class BatchRequest(BaseModel):
    """Body of ``POST .../batch-request`` (seed 000)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    filetype: FileType
    tokens: BatchTokens = Field(default_factory=BatchTokens)
    is_ohs_request: bool = Field(default=False, alias="isOhsRequest")


class BatchStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class BatchJob(BaseModel):
    """A batch-request job as the API reports it."""

    model_config = _OURS

    job_id: str = Field(alias="JobId")
    subscription_id: str = Field(alias="SubscriptionId")
    status: BatchStatus = Field(alias="Status")
    filetype: FileType = Field(alias="filetype")
    tokens: BatchTokens = Field(alias="tokens")
    is_ohs_request: bool = Field(alias="isOhsRequest")
    reason: str | None = Field(default=None, alias="Reason", description="Why it failed.")
    row_count: int | None = Field(default=None, alias="RowCount")
    size_bytes: int | None = Field(default=None, alias="SizeBytes")
    sha256: str | None = Field(default=None, alias="Sha256", description="Of the file, hex.")
    created_at: UtcDatetime = Field(alias="CreatedAt")
    started_at: UtcDatetime | None = Field(default=None, alias="StartedAt")
    finished_at: UtcDatetime | None = Field(default=None, alias="FinishedAt")
    download: str | None = Field(
        default=None, alias="Download", description="Path of the file once the job is done."
    )
