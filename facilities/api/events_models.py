"""The live stream's events as the OpenAPI document describes them (docs/api.md, "Live
stream"): one union keyed on `event`, the same for server-sent events (`event:` and `data:`
lines, `id:` the event's id) and WebSocket text messages (`{"id", "event", "data"}`). The feed
(api/live.py) builds these bodies; these models are their contract."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from facilities.alerts import Change
from facilities.api.models import AlertBrief, GarageDetail, Out, StationDetail
from facilities.verdicts import ActionKind


class AlertEventPublic(AlertBrief):
    """An alert as the public stream carries it: what a station's or garage's `alerts` show,
    and what changed."""

    change: Change


class AlertEventAction(Out):
    """A command the alert's rule asked for (not `Alert.actions`, which are commands sent)."""

    action: ActionKind
    device: str
    port: int | None = Field(description="the port to switch off; null: not a port")
    gate: str | None = Field(description="the gate to open; null: not a gate")


class AlertEvent(AlertEventPublic):
    """An alert as the staff stream carries it (a staff token): as published on MQTT
    `facilities/alerts/…` (docs/rules.md)."""

    raised_at: datetime
    updated_at: datetime
    cleared_at: datetime | None
    value: float | None
    peak: float | None
    count: int
    acknowledged_by: str | None = Field(description="the staff member's id")
    acknowledged_at: datetime | None
    actions: list[AlertEventAction]


class Heartbeat(Out):
    at: datetime = Field(description="the service's time")


class StreamEnd(Out):
    reason: str = Field(description="why the stream ends: reconnect, then fetch the state again")


class _Event(Out):
    id: int = Field(description="orders the events of one connection (no resuming from it)")


class StationEvent(_Event):
    event: Literal["station"]
    data: StationDetail


class GarageEvent(_Event):
    event: Literal["garage"]
    data: GarageDetail


class AlertChangeEvent(_Event):
    event: Literal["alert"]
    data: AlertEvent | AlertEventPublic = Field(
        description="`AlertEvent` on a staff stream, `AlertEventPublic` on the public one"
    )


class HeartbeatEvent(_Event):
    event: Literal["heartbeat"]
    data: Heartbeat


class LaggedEvent(_Event):
    event: Literal["lagged"]
    data: StreamEnd


class ClosingEvent(_Event):
    event: Literal["closing"]
    data: StreamEnd


LiveEvent = Annotated[
    StationEvent | GarageEvent | AlertChangeEvent | HeartbeatEvent | LaggedEvent | ClosingEvent,
    Field(discriminator="event"),
]
