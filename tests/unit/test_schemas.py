"""Wire models: the seeds' own examples round-trip; bad input names the field."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas import (
    Action,
    ActionResponse,
    BatchRequest,
    ChargingEventRecord,
    EntityType,
    FileType,
    Measurement,
    OnDemandRequest,
    PowerLimit,
    StreamPayload,
    Transaction,
    TransactionState,
)
from schemas.export import SCHEMA_DIR, WIRE_MODELS, render

SEED_MEASUREMENT = """{
"assetId": "<ASSET_ID>",
"timestamp": "2024-05-28T10:52:00+00:00",
"energyValue": 2371835,
"powerValue": 3463.99
}"""

SEED_TRANSACTION = """{
"assetId": "6d1e358e-8f8c-488d-b234-9564c3c282be",
"transactionId": "d9108f64-669d-411c-a963-9c365cbc5dcc",
"timestamp": "2023-02-23T09:43:33+00:00",
"transactionState": "Started",
"type": "ac",
"startTime": "2023-02-23T09:43:33+00:00",
"stopTime": null,
"noChargingPhases": "3Phase",
"usedChargingPins": ["pin1", "pin2", "pin3"],
"maxPower": 7000,
"requestedMinEnergy": 20000,
"requestedMaxEnergy": 24000,
"estimatedDepartureTime": "2023-02-23T17:00:00+00:00",
"priority": 0,
"profileId": "profile-1"
}"""

# Seed 001, verbatim apart from the trailing comma (see test_seed_trailing_commas_are_not_json).
SEED_STREAM = """{
"EVChargingEvents": [
{
"ServicePointID": "xxxxxxxxxx",
"MeterID": "xxxxxxxxxx",
"MeterNumber": "xxxxxxxxxx",
"ESN": "x.xx.xxx.x.xxxxxx.xx.xx.xxxxxxxxxx",
"TransformerID": "xxxxxxxxxx-xxxxxxxx",
"PremiseID": "Pxxxxxxxxxx",
"ReceivedTime": "2023-09-13T00:29:55.55Z",
"ChargeStartTime": "2023-09-13T00:29:55.55Z",
"ChargeEndTime": null,
"ChargeW": "1237.375166",
"ChargeDuration": null,
"ChargeEnergy": null
}
]
}"""

SEED_ON_DEMAND_ITEM = """{
"ReceivedTime": {},
"ServicePointId": "50015xxxx_zzzz",
"MeterId": "J440xxxx",
"MeterNumber": "J440xxxx",
"ElectronicSerialNumber": "2.16.840.1.114416.34.360xxxxxx",
"TransformerId": "BOL1xxxx",
"PremiseId": "50015xxxx_zzzz",
"FeederId": {},
"ChargeStartTime": "2025-11-01T15:26:33",
"ChargeEndTime": "2025-11-01T17:07:44",
"ChargeW": 6861,
"ChargeDuration": 1.690000,
"ChargeEnergy": 11570.31
}"""

SEED_BATCH = """{
"filetype": "csv",
"tokens":
{
"StartEventDate": "",
"EndEventDate": "",
"StartReceivedDateTime": "2025-12-03",
"EndReceivedDateTime": "",
"Device": "",
"ElectronicSerialNumber": "",
"Meter": "",
"MeterNumber": "",
"ServicePoint": "",
"Premises": "",
"Transformer": "",
"Feeder": ""
},
"isOhsRequest": false
}"""

SEED_ACTION_RESPONSE = """{
    "ok": true,
    "message": "",
    "result": {
        "_id": "630cc5a7b8d8867b16ca6f55",
        "type": "session.set_power_limit",
        "status": "requested",
        "chargestation": "630cbe24c459e97b158e8c23",
        "data": {
            "unit": "current",
            "limit": 40
        },
        "connector": "630cbe25b8d8867b16c9d0b2",
        "createdAt": "2022-08-29T13:56:55.140Z",
        "updatedAt": "2022-08-29T13:56:55.140Z"
    }
}"""


def _keys(obj: object) -> set[str]:
    """All keys of a JSON document, recursively."""
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _keys(v)}
    return set()


def test_measurement_seed_round_trips():
    """Seed 002's measurement parses and serialises back with the same names and values."""
    m = Measurement.model_validate_json(SEED_MEASUREMENT.replace("<ASSET_ID>", "meter-1"))
    assert m.energy_wh == 2371835
    assert m.power_w == 3463.99
    out = json.loads(m.model_dump_json(by_alias=True, exclude_none=True))
    assert out == {
        "assetId": "meter-1",
        "timestamp": "2024-05-28T10:52:00Z",
        "energyValue": 2371835,
        "powerValue": 3463.99,
    }


def test_measurement_seed_placeholder_is_a_valid_asset_id():
    """The seed's literal <ASSET_ID> placeholder is a legal topic level, so it parses as is."""
    m = Measurement.model_validate_json(SEED_MEASUREMENT)
    assert m.asset_id == "<ASSET_ID>"


def test_transaction_seed_round_trips():
    """Every field of seed 002's transaction survives a round trip with its wire name."""
    t = Transaction.model_validate_json(SEED_TRANSACTION)
    assert t.transaction_state is TransactionState.STARTED
    out = json.loads(t.model_dump_json(by_alias=True))
    seed = json.loads(SEED_TRANSACTION)
    for key, value in seed.items():
        if key.endswith(("Time", "timestamp")) and value:
            assert out[key] == value.replace("+00:00", "Z")
        else:
            assert out[key] == value, key


def test_transaction_extension_fields_round_trip():
    """The detector's documented extension fields are part of the contract."""
    seed = json.loads(SEED_TRANSACTION)
    seed.update(
        evEnergy=11570.3, evPower=6861.0, evPeakPower=7027.0, meterEnergy=12500.0,
        detectorVersion="step-floor/1", confidence=0.93, sequenceNumber=3,
    )  # fmt: skip
    t = Transaction.model_validate(seed)
    assert t.ev_peak_power_w == 7027.0
    assert t.sequence_number == 3
    assert json.loads(t.model_dump_json(by_alias=True))["evEnergy"] == 11570.3


def test_stream_seed_round_trips_with_numbers_as_numbers():
    """Seed 001's payload parses; its string numbers come back as JSON numbers."""
    payload = StreamPayload.model_validate_json(SEED_STREAM)
    event = payload.events[0]
    assert event.charge_w == pytest.approx(1237.375166)
    out = json.loads(payload.model_dump_json(by_alias=True))
    assert _keys(out) == _keys(json.loads(SEED_STREAM))
    assert out["EVChargingEvents"][0]["ChargeW"] == pytest.approx(1237.375166)
    assert out["EVChargingEvents"][0]["ChargeStartTime"] == "2023-09-13T00:29:55.550000Z"


def test_stream_event_must_be_start_or_end():
    """A streamed event that mixes start and end values (seed 001's own example) is refused."""
    mixed = json.loads(SEED_STREAM)
    mixed["EVChargingEvents"][0].update(
        ChargeEndTime="2023-09-13T00:29:55.55Z", ChargeDuration="22", ChargeEnergy="56.2"
    )
    with pytest.raises(ValidationError, match="either a start"):
        StreamPayload.model_validate(mixed)


def test_seed_trailing_commas_are_not_json():
    """The seeds' examples with trailing commas are not JSON; the models refuse them clearly."""
    with pytest.raises(ValidationError, match=r"json_invalid|Invalid JSON"):
        StreamPayload.model_validate_json(
            SEED_STREAM.replace('"ChargeEnergy": null', '"ChargeEnergy": null,')
        )


def test_on_demand_seed_item_needs_offsets_and_reads_empty_objects_as_null():
    """Seed 000's naive times are refused; with an offset the item parses and {} means null."""
    with pytest.raises(ValidationError, match="ChargeStartTime"):
        ChargingEventRecord.model_validate_json(SEED_ON_DEMAND_ITEM)
    fixed = SEED_ON_DEMAND_ITEM.replace(':33"', ':33Z"').replace(':44"', ':44Z"')
    record = ChargingEventRecord.model_validate_json(fixed)
    assert record.received_time is None
    assert record.feeder_id is None
    out = json.loads(record.model_dump_json(by_alias=True))
    assert set(out) == set(json.loads(fixed))
    assert out["ChargeStartTime"] == "2025-11-01T15:26:33Z"
    assert out["FeederId"] is None


def test_batch_request_seed_round_trips():
    """Seed 000's batch body parses; blank tokens are no filter; a bare date is 00:00 UTC."""
    req = BatchRequest.model_validate_json(SEED_BATCH)
    assert req.filetype is FileType.CSV
    assert req.is_ohs_request is False
    assert req.tokens.start_received == datetime(2025, 12, 3, tzinfo=UTC)
    assert req.tokens.meter is None
    out = json.loads(req.model_dump_json(by_alias=True))
    assert _keys(out) == _keys(json.loads(SEED_BATCH))


def test_on_demand_request_accepts_dates_offsets_and_both_spellings():
    """Dates, offsets, both seed spellings of *ReceivedDatetime, and case-folded EntityType."""
    req = OnDemandRequest.model_validate(
        {
            "StartReceivedDatetime": "2023-1-1",
            "EndReceivedDateTime": "2023-01-31T12:00:00-05:00",
            "EntityType": "servicepoint",
            "EntityId": "SP-1",
        }
    )
    assert req.start_received == datetime(2023, 1, 1, tzinfo=UTC)
    assert req.end_received == datetime(2023, 1, 31, 17, tzinfo=UTC)
    assert req.entity_type is EntityType.SERVICE_POINT
    assert req.entity_ids == ["SP-1"]


def test_action_response_seed_round_trips():
    """Seed 003's set_power_limit response parses and serialises with _id and camelCase times."""
    resp = ActionResponse.model_validate_json(SEED_ACTION_RESPONSE)
    assert isinstance(resp.result, Action)
    assert resp.result.id == "630cc5a7b8d8867b16ca6f55"
    out = json.loads(resp.model_dump_json(by_alias=True, exclude_none=True))
    assert out["result"]["_id"] == "630cc5a7b8d8867b16ca6f55"
    assert out["result"]["createdAt"] == "2022-08-29T13:56:55.140000Z"
    assert _keys(out) == _keys(json.loads(SEED_ACTION_RESPONSE))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"unit": "power", "limit": 75000}, None),
        ({"unit": "current", "limit": 40}, None),
        ({"unit": "volts", "limit": 40}, "unit"),
        ({"unit": "power", "limit": 0}, "limit"),
        ({"unit": "power", "limit": -5}, "limit"),
        ({"unit": "current", "limit": 5000}, "plausible"),
    ],
)
def test_power_limit_validation(body, field):
    """Seed 003's examples validate; bad units and non-positive or absurd limits are refused."""
    if field is None:
        assert PowerLimit.model_validate(body).limit == body["limit"]
    else:
        with pytest.raises(ValidationError, match=field):
            PowerLimit.model_validate(body)


@pytest.mark.parametrize(
    ("model", "change", "field"),
    [
        (Measurement, {"timestamp": "2024-05-28T10:52:00"}, "timestamp"),
        (Measurement, {"energyValue": -1}, "energyValue"),
        (Measurement, {"energyValue": "lots"}, "energyValue"),
        (Measurement, {"currentStateOfCharge": 101}, "currentStateOfCharge"),
        (Measurement, {"assetId": "a/b"}, "assetId"),
        (Measurement, {"voltage": 230}, "voltage"),
        (Transaction, {"priority": 11}, "priority"),
        (Transaction, {"transactionState": "Paused"}, "transactionState"),
        (Transaction, {"startTime": "2023-02-23T09:43:33"}, "startTime"),
        (Transaction, {"noChargingPhases": "4Phase"}, "noChargingPhases"),
        (Transaction, {"requestedMinEnergy": 30000}, "requestedMinEnergy"),
    ],
)
def test_bad_input_names_the_field(model, change, field):
    """Wrong types, naive times, out-of-range values and unknown states name the field."""
    base = json.loads(SEED_TRANSACTION if model is Transaction else SEED_MEASUREMENT)
    base["assetId"] = "meter-1"
    base.update(change)
    with pytest.raises(ValidationError, match=re.escape(field)):
        model.model_validate(base)


def test_missing_required_field_is_named():
    """A measurement without powerValue is refused naming powerValue."""
    with pytest.raises(ValidationError, match="powerValue"):
        Measurement.model_validate(
            {"assetId": "m", "timestamp": "2024-01-01T00:00:00Z", "energyValue": 1}
        )


def test_naive_timestamp_error_is_clear():
    """The error for a naive timestamp says what is wrong."""
    with pytest.raises(ValidationError, match="timezone"):
        Measurement.model_validate(
            {"assetId": "m", "timestamp": "2024-01-01T00:00:00", "energyValue": 1, "powerValue": 1}
        )


def test_offsets_are_normalised_to_utc():
    """A +02:00 timestamp is stored and written as UTC with Z."""
    m = Measurement.model_validate(
        {
            "assetId": "m",
            "timestamp": "2024-01-01T02:00:00+02:00",
            "energyValue": 1,
            "powerValue": 1,
        }
    )
    assert m.timestamp == datetime(2024, 1, 1, tzinfo=UTC)
    assert json.loads(m.model_dump_json(by_alias=True))["timestamp"] == "2024-01-01T00:00:00Z"


@pytest.mark.parametrize("name", sorted(WIRE_MODELS))
def test_json_schema_files_are_current(name):
    """schemas/jsonschema/*.json match the models (run `python -m schemas` after a change)."""
    path = SCHEMA_DIR / f"{name}.json"
    assert path.exists(), f"{path} missing: run python -m schemas"
    assert path.read_text(encoding="utf-8") == render(WIRE_MODELS[name])


def test_a_control_scope_may_name_a_feeder_and_a_subscription_may_not():
    from schemas.subscriptions import ControlEntityType, ControlScope, EntityFilter

    scope = ControlScope(EntityType=" FEEDER ", EntityId="F-1")
    assert scope.entity_type is ControlEntityType.FEEDER
    assert scope.model_dump(by_alias=True, mode="json") == {
        "EntityType": "Feeder",
        "EntityId": ["F-1"],
    }
    assert ControlScope().entity_type is ControlEntityType.NONE
    with pytest.raises(ValidationError, match="EntityType Feeder needs at least one EntityId"):
        ControlScope(EntityType="Feeder")
    with pytest.raises(ValidationError, match="takes no EntityId"):
        ControlScope(EntityType="None", EntityId=["F-1"])
    with pytest.raises(ValidationError, match="EntityType"):
        EntityFilter(EntityType="Feeder", EntityId=["F-1"])  # seed 001's types only
    # Every entity type a subscription filters on can scope control too.
    assert {kind.value for kind in EntityType} < {kind.value for kind in ControlEntityType}
