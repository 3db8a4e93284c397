"""What every device message shares: the strict wire model, availability, commands and acks."""

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_PAYLOAD_BYTES = 64 * 1024  # PROTOCOL.md: payloads are at most 64 KiB

Seq = Annotated[int, Field(ge=0, description="+1 per message on this topic; 0 after a reboot")]
DeviceTime = Annotated[float, Field(gt=0, description="device clock, Unix seconds, UTC")]
NonNegative = Annotated[float, Field(ge=0)]
Text = Annotated[str, Field(min_length=1, max_length=256)]


class WireModel(BaseModel):
    """A payload as devices send it: strict types, finite numbers, frozen.

    Unknown fields are kept aside (`model_extra`) so that ingest can count them: PROTOCOL.md
    lets vendors add optional fields, so they are ignored rather than refused.
    """

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow", frozen=True)

    def extra_field_count(self) -> int:
        """Number of fields this payload carried that the protocol does not define."""
        return len(self.model_extra or {})


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
    port: int | None = Field(None, ge=1, description="charging: the port, absent = whole station")
    reason: Text | None = Field(None, description="why: a rule name, `staff`, `app`")
    resident: Text | None = Field(None, description="gate: the resident the gate opens for")
    expires: DeviceTime | None = Field(None, description="gate: do not act after this time")


class CommandAck(WireModel):
    """A device's answer to a command."""

    id: Text = Field(description="the id of the command being answered")
    ok: bool = Field(description="true when the device carried the command out")
    error: Text | None = Field(None, description="why not, when ok is false")
