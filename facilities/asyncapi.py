"""An AsyncAPI 3.0 document of the MQTT interface (docs/protocol.md), from the wire models.

The document describes the service: what it receives from devices (telemetry, events,
availability, acks) and what it sends them (commands, refusals) and everyone (its status).
Payload schemas come from the same pydantic models as docs/schemas/, their shared parts
moved to `components.schemas` (a `$ref` in an AsyncAPI document resolves against the
document, not the payload).
"""

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from facilities.charging.payloads import StationEvent, StationTelemetry
from facilities.garage.payloads import GarageTelemetry, GateEvent
from facilities.messages import RejectReason
from facilities.mqtt.commands import ACK_TIMEOUT_S, TRIES
from facilities.mqtt.topics import DEFAULT_PREFIX
from facilities.wire import Command, CommandAck

FILE_NAME = "asyncapi.json"
SCHEMA_REF = "#/components/schemas/{model}"
MQTT_BINDING = "0.2.0"
ID_DESCRIPTION = "id of the site file: ^[a-z0-9][a-z0-9-]{0,31}$"

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Channel:
    """One topic of docs/protocol.md, "Topics"."""

    key: str
    suffix: str  # the topic after the prefix, with {parameters}
    message: str  # the key of its message in components.messages
    action: str  # the service's: receive (devices publish) or send
    description: str
    retained: bool = False


CHANNELS = (
    Channel(
        "stationTelemetry",
        "charging/{station}/telemetry",
        "stationTelemetry",
        "receive",
        "A station's readings: every 10 s, and at once when a reading crosses a limit. QoS 1.",
    ),
    Channel(
        "stationEvent",
        "charging/{station}/event",
        "stationEvent",
        "receive",
        "Plug-ins, faults, buttons: when they happen. QoS 1.",
    ),
    Channel(
        "stationAvailability",
        "charging/{station}/availability",
        "availability",
        "receive",
        "`online` after connecting, `offline` as the Last Will and before a planned stop. "
        "QoS 1, retained.",
        retained=True,
    ),
    Channel(
        "stationCommand",
        "charging/{station}/command",
        "command",
        "send",
        "`power_off` / `power_on`, with `port` or for the whole station. QoS 1, not retained, "
        f"with an MQTT 5 message expiry; retried with the same id every {ACK_TIMEOUT_S:g} s, "
        f"{TRIES} tries in all, until acked.",
    ),
    Channel(
        "stationCommandAck",
        "charging/{station}/command/ack",
        "commandAck",
        "receive",
        "The station's answer to a command, by its id. QoS 1.",
    ),
    Channel(
        "stationRejected",
        "charging/{station}/rejected",
        "rejected",
        "send",
        "Each message of the station the service refused (quarantined). QoS 1, not retained.",
    ),
    Channel(
        "garageTelemetry",
        "garage/{garage}/telemetry",
        "garageTelemetry",
        "receive",
        "A garage controller's readings, every 10 s. QoS 1.",
    ),
    Channel(
        "garageAvailability",
        "garage/{garage}/availability",
        "availability",
        "receive",
        "As for stations. QoS 1, retained.",
        retained=True,
    ),
    Channel(
        "gateEvent",
        "garage/{garage}/gate/{gate}/event",
        "gateEvent",
        "receive",
        "Passages and the gate's position, published by the garage controller. QoS 1.",
    ),
    Channel(
        "gateCommand",
        "garage/{garage}/gate/{gate}/command",
        "command",
        "send",
        "`open`, sent once (a second copy would be a late open). QoS 1, not retained, with an "
        "MQTT 5 message expiry.",
    ),
    Channel(
        "gateCommandAck",
        "garage/{garage}/gate/{gate}/command/ack",
        "commandAck",
        "receive",
        "The garage controller's answer to a gate command. QoS 1.",
    ),
    Channel(
        "garageRejected",
        "garage/{garage}/rejected",
        "rejected",
        "send",
        "Each message of the garage or its gates the service refused. QoS 1, not retained.",
    ),
    Channel(
        "serviceStatus",
        "service/status",
        "availability",
        "send",
        "The service's own availability: `online`, and `offline` as its Last Will. QoS 1, "
        "retained; every device may read it.",
        retained=True,
    ),
)

MODELS: dict[str, type[BaseModel]] = {
    "stationTelemetry": StationTelemetry,
    "stationEvent": StationEvent,
    "garageTelemetry": GarageTelemetry,
    "gateEvent": GateEvent,
    "command": Command,
    "commandAck": CommandAck,
}

# The commands' replies: the ack channel of each command channel.
REPLIES = {"stationCommand": "stationCommandAck", "gateCommand": "gateCommandAck"}

PARAMETERS = {
    "station": "the station's id (" + ID_DESCRIPTION + ")",
    "garage": "the garage's id (" + ID_DESCRIPTION + ")",
    "gate": "the gate's id within its garage (" + ID_DESCRIPTION + ")",
}


def _model_schemas() -> tuple[dict[str, str], Json]:
    """Message key → its payload schema's name, and every schema by name."""
    names: dict[str, str] = {}
    schemas: Json = {}
    for key, model in MODELS.items():
        schema = model.model_json_schema(mode="validation", ref_template=SCHEMA_REF)
        schemas.update(schema.pop("$defs", {}))
        # Extra fields are accepted and ignored (docs/protocol.md, "Payload rules the
        # service enforces"), as in docs/schemas/.
        schema["additionalProperties"] = True
        names[key] = model.__name__
        schemas[model.__name__] = schema
    schemas["Availability"] = {
        "type": "string",
        "enum": ["online", "offline"],
        "description": "plain text, not JSON",
    }
    schemas["Rejected"] = _rejected_schema()
    names["availability"] = "Availability"
    names["rejected"] = "Rejected"
    return names, schemas


def _rejected_schema() -> Json:
    """What the service publishes on a device's `…/rejected` topic (docs/protocol.md,
    "Telling a device what was refused")."""
    # `seq` and `ts` as the devices' own messages bound them
    own = StationEvent.model_json_schema(mode="validation")["properties"]
    seq = {**own["seq"], "description": "its seq, when it could be read"}
    ts = {**own["ts"], "description": "its ts, when it could be read"}
    return {
        "type": "object",
        "title": "Rejected",
        "required": ["topic", "reason", "detail"],
        "properties": {
            "topic": {"type": "string", "description": "the refused message's topic"},
            "seq": seq,
            "ts": ts,
            "reason": {"type": "string", "enum": [r.value for r in RejectReason]},
            "detail": {"type": "string", "description": "what was wrong, for a person"},
        },
        "additionalProperties": True,
    }


def _message(key: str, schema_name: str) -> Json:
    plain = schema_name == "Availability"
    return {
        "name": key,
        "title": schema_name,
        "contentType": "text/plain" if plain else "application/json",
        "payload": {"$ref": SCHEMA_REF.format(model=schema_name)},
    }


def _channel(channel: Channel, prefix: str) -> Json:
    address = f"{prefix}/{channel.suffix}"
    params = [p for p in PARAMETERS if "{" + p + "}" in address]
    out: Json = {
        "address": address,
        "description": channel.description,
        "messages": {channel.message: {"$ref": f"#/components/messages/{channel.message}"}},
    }
    if params:
        out["parameters"] = {p: {"description": PARAMETERS[p]} for p in params}
    return out


def _operation(channel: Channel) -> Json:
    out: Json = {
        "action": channel.action,
        "channel": {"$ref": f"#/channels/{channel.key}"},
        "summary": channel.description.split(". ")[0].rstrip("."),
        "messages": [{"$ref": f"#/channels/{channel.key}/messages/{channel.message}"}],
        "bindings": {
            "mqtt": {"qos": 1, "retain": channel.retained, "bindingVersion": MQTT_BINDING}
        },
    }
    reply = REPLIES.get(channel.key)
    if reply is not None:
        out["reply"] = {"channel": {"$ref": f"#/channels/{reply}"}}
    return out


def render_asyncapi(prefix: str = DEFAULT_PREFIX) -> str:
    """The AsyncAPI 3.0 document as stable JSON text (sorted keys, trailing newline)."""
    names, schemas = _model_schemas()
    document: Json = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "facilities — device protocol (MQTT)",
            "version": "1",
            "description": (
                "The MQTT interface between charging stations, garage controllers and the "
                "facilities service, seen from the service. docs/protocol.md is the reference "
                "(session, QoS, timing, what a device does case by case)."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": "127.0.0.1:1883",
                "protocol": "mqtt",
                "description": "Mosquitto with the shipped mosquitto.conf: each client's id "
                "is its user name (a device's id), anonymous clients are refused.",
                "security": [{"$ref": "#/components/securitySchemes/devicePassword"}],
            }
        },
        "channels": {c.key: _channel(c, prefix) for c in CHANNELS},
        "operations": {f"{c.action}{c.key[0].upper()}{c.key[1:]}": _operation(c) for c in CHANNELS},
        "components": {
            "schemas": schemas,
            "messages": {key: _message(key, name) for key, name in names.items()},
            "securitySchemes": {
                "devicePassword": {
                    "type": "userPassword",
                    "description": "user name = the device's id, its password from "
                    "`facilities broker-config`",
                }
            },
        },
    }
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
