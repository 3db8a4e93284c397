"""Wire models of what garage controllers and gates publish (docs/protocol.md, "Topics")."""

from enum import StrEnum

from pydantic import Field

from facilities.wire import Count, DeviceTime, Seq, Temperature, WireModel

CREDENTIAL_PATTERN = r"^(card|qr|app):[\x21-\x7e]{1,128}$"


class GateEventType(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"
    DENIED = "denied"
    OPENED = "opened"
    CLOSED = "closed"
    FORCED_OPEN = "forced_open"


class GarageTelemetry(WireModel):
    """`facilities/garage/{garage}/telemetry`, every 10 s."""

    seq: Seq
    ts: DeviceTime
    occupancy: Count | None = Field(None, description="bicycles inside")
    temp_c: Temperature | None = Field(None, description="garage temperature")
    smoke: bool | None = Field(None, description="the garage's smoke detectors, any of them")


class GateEvent(WireModel):
    """`facilities/garage/{garage}/gate/{gate}/event`."""

    seq: Seq
    ts: DeviceTime
    type: GateEventType
    credential: str | None = Field(
        None, pattern=CREDENTIAL_PATTERN, description="`card:<uid>`, `qr:<code>`, `app:<id>`"
    )
