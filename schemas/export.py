"""JSON Schema files for every wire message, exported from the models.

``python -m schemas`` rewrites ``schemas/jsonschema/``; a test fails when they are stale.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.edrv import Action, ActionEvent, ActionResponse, CommandResult, EdgeCommand, PowerLimit
from schemas.itron import (
    BatchJob,
    BatchRequest,
    ChargingEventRecord,
    OnDemandRequest,
    StreamPayload,
)
from schemas.pleevi import Measurement, Transaction
from schemas.status import GatewayStatus

WIRE_MODELS: dict[str, type[BaseModel]] = {
    "pleevi.measurement": Measurement,
    "pleevi.transaction": Transaction,
    "gateway.status": GatewayStatus,
    "itron.charging_event": ChargingEventRecord,
    "itron.stream_payload": StreamPayload,
    "itron.on_demand_request": OnDemandRequest,
    "itron.batch_request": BatchRequest,
    "itron.batch_job": BatchJob,
    "edrv.power_limit": PowerLimit,
    "edrv.action": Action,
    "edrv.action_response": ActionResponse,
    "edrv.action_event": ActionEvent,
    "edge.command": EdgeCommand,
    "edge.command_result": CommandResult,
}

SCHEMA_DIR = Path(__file__).parent / "jsonschema"


def render(model: type[BaseModel]) -> str:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in WIRE_MODELS.items():
        path = directory / f"{name}.json"
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written
