"""What every device message shares: the strict wire model, availability, commands and acks."""

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_PAYLOAD_BYTES = 64 * 1024  # docs/protocol.md: payloads are at most 64 KiB

# Every number a device sends is bounded, so that no value can fail later in the store or in
# arithmetic (docs/protocol.md, "Payload rules"). Integers: SQLite's INTEGER is signed 64-bit;
# past it the driver raises OverflowError instead of storing.
MAX_INTEGER = 2**63 - 1
# Device time: up to 2**32 s (February 2106), where a 32-bit device clock ends; far enough
# below datetime's year 9999 that no date arithmetic on it can overflow. A clock reset to 1970
# is still accepted (> 0): a device with a flat clock battery still reports hazards.
MAX_DEVICE_TIME = float(2**32)
# Ports: the site file allows at most 64 per station (site.py); the decoder also refuses a
# port past the station's own count.
MAX_PORT = 64
# Measurements are bounded far beyond physics, so that a broken sensor's saturated reading
# (a 16-bit ADC in 0.1 units tops out at 6,553.5) is still accepted and acted on, while a
# value such as 1e300 is refused before sums over 64 ports could overflow to infinity.
MAX_MEASURE = 1e9
MAX_TEMP_C = 1e4
MIN_TEMP_C = -273.15  # absolute zero
MAX_COUNT = 1_000_000  # bicycles in a garage: the site's largest has a few hundred bays

Seq = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_INTEGER,
        # a signed 64-bit integer: past 2**53 a JavaScript reader loses precision
        json_schema_extra={"format": "int64"},
        description="+1 per message on this topic; 0 after a reboot (signed 64-bit)",
    ),
]
DeviceTime = Annotated[
    float, Field(gt=0, le=MAX_DEVICE_TIME, description="device clock, Unix seconds, UTC")
]
NonNegative = Annotated[float, Field(ge=0, le=MAX_MEASURE)]
Signed = Annotated[float, Field(ge=-MAX_MEASURE, le=MAX_MEASURE)]
Temperature = Annotated[float, Field(ge=MIN_TEMP_C, le=MAX_TEMP_C)]
Port = Annotated[int, Field(ge=1, le=MAX_PORT)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Text = Annotated[str, Field(min_length=1, max_length=256)]


class WireModel(BaseModel):
    """A payload as devices send it: strict types, finite numbers, frozen.

    Unknown fields are kept aside (`model_extra`) so that ingest can count them: docs/protocol.md
    ("Payload rules the service enforces") lets vendors add optional fields, so they are
    ignored rather than refused.
    """

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow", frozen=True)

    def extra_field_count(self) -> int:
        """Number of fields this payload carried that the protocol does not define."""
        # the dict behind `model_extra`, read directly: once per port of every message
        return len(self.__pydantic_extra__ or ())


class Availability(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class CommandAction(StrEnum):
    POWER_OFF = "power_off"
    POWER_ON = "power_on"
    OPEN = "open"


class Command(WireModel):
    """A command the service sends to a station or a gate (QoS 1, not retained)."""

    id: Text = Field(description="unique command id (a UUID); the ack repeats it")
    ts: DeviceTime = Field(description="when the service sent it, Unix seconds")
    action: CommandAction
    port: Port | None = Field(None, description="charging: the port, absent = whole station")
    reason: Text | None = Field(None, description="why: a rule name, `staff`, `app`")
    resident: Text | None = Field(None, description="gate: the resident the gate opens for")
    expires: DeviceTime | None = Field(
        None, description="never act after this time (every command has it: docs/protocol.md)"
    )


class CommandAck(WireModel):
    """A device's answer to a command."""

    id: Text = Field(description="the id of the command being answered")
    ok: bool = Field(description="true when the device carried the command out")
    error: Text | None = Field(None, description="why not, when ok is false")
