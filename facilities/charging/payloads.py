"""Wire models of what charging stations publish (docs/protocol.md, "Topics")."""

from enum import StrEnum

from pydantic import Field

from facilities.wire import (
    DeviceTime,
    NonNegative,
    Port,
    Seq,
    Signed,
    Temperature,
    Text,
    WireModel,
)


class PortState(StrEnum):
    IDLE = "idle"
    CHARGING = "charging"
    FULL = "full"
    FAULT = "fault"
    DISABLED = "disabled"


class StationEventType(StrEnum):
    PLUG_IN = "plug_in"
    UNPLUG = "unplug"
    CHARGE_COMPLETE = "charge_complete"
    FAULT = "fault"
    FAULT_CLEARED = "fault_cleared"
    BUTTON = "button"


class PortReading(WireModel):
    """One port in a telemetry message."""

    port: Port = Field(description="port number, from 1 to the station's port count")
    state: PortState
    voltage_v: Signed | None = Field(None, description="supply voltage at the port")
    current_a: NonNegative | None = Field(None, description="current drawn")
    power_w: NonNegative | None = Field(None, description="power drawn")
    energy_wh: NonNegative | None = Field(None, description="energy of the session so far")
    temp_c: Temperature | None = Field(None, description="port (socket) temperature")


class StationTelemetry(WireModel):
    """`facilities/charging/{station}/telemetry`, every 10 s by default."""

    seq: Seq
    ts: DeviceTime
    temp_c: Temperature | None = Field(None, description="cabinet temperature")
    leakage_ma: NonNegative | None = Field(None, description="residual (leakage) current")
    smoke: bool | None = Field(None, description="the cabinet's smoke detector")
    ports: list[PortReading] = Field(
        default_factory=list,
        max_length=64,
        description="all ports, or those that changed; each port once",
    )

    # Each port at most once, and none past the station's count: the decoder checks both in
    # one pass (facilities/mqtt/decode.py), a validator here cost a call into Python from
    # pydantic's core for every message (docs/performance.md, "Each topic worked out once").

    def extra_field_count(self) -> int:
        extra = super().extra_field_count()
        for reading in self.ports:
            if reading.__pydantic_extra__:
                extra += len(reading.__pydantic_extra__)
        return extra


class StationEvent(WireModel):
    """`facilities/charging/{station}/event`, when something happens."""

    seq: Seq
    ts: DeviceTime
    type: StationEventType
    port: Port | None = Field(None, description="absent for station-wide events")
    code: Text | None = Field(None, description="with `fault`: the vendor's fault code")
