"""JSON Schemas of every payload, generated from the wire models, for device integrators."""

import json
from pathlib import Path

from pydantic import BaseModel

from facilities.asyncapi import FILE_NAME as ASYNCAPI_FILE
from facilities.asyncapi import render_asyncapi
from facilities.charging.payloads import StationEvent, StationTelemetry
from facilities.garage.payloads import GarageTelemetry, GateEvent
from facilities.wire import Command, CommandAck

SCHEMAS: dict[str, type[BaseModel]] = {
    "station-telemetry": StationTelemetry,
    "station-event": StationEvent,
    "garage-telemetry": GarageTelemetry,
    "gate-event": GateEvent,
    "command": Command,
    "command-ack": CommandAck,
}


def render_schemas() -> dict[str, str]:
    """File name → JSON Schema text (stable: sorted keys, trailing newline)."""
    rendered = {}
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        # Extra fields are accepted and ignored (counted), as docs/protocol.md allows additions
        # ("Payload rules the service enforces").
        schema["additionalProperties"] = True
        text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        rendered[f"{name}.schema.json"] = text
    return rendered


def write_schemas(out: Path) -> list[Path]:
    """Write every schema into `out`, and the AsyncAPI document of the whole MQTT interface
    beside them (`asyncapi.json`); return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in {**render_schemas(), ASYNCAPI_FILE: render_asyncapi()}.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
