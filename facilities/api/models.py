"""Public response and request models of the HTTP API (docs/api.md): never storage rows."""

from datetime import datetime
from enum import StrEnum
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from facilities.access import Role
from facilities.alerts import AlertState
from facilities.charging.live import EndReason
from facilities.verdicts import Severity

T = TypeVar("T")


# What a command's `cause` says (the command audit of docs/security.md).
CAUSE = (
    "the device message that made a rule send it: its kind, device, `seq` and `ts` as stored "
    "(`garage_telemetry g-hc3 seq 41 ts 1764400301.000`); null: the server's clock or a person"
)


class Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class PortStatus(StrEnum):
    IDLE = "idle"
    CHARGING = "charging"
    FULL = "full"
    FAULT = "fault"
    DISABLED = "disabled"
    UNKNOWN = "unknown"  # not reported since the service started keeping this station


class CommandOutcome(StrEnum):
    """What became of a command sent to a device."""

    PENDING = "pending"
    ACKED = "acked"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    ABANDONED = "abandoned"


class CommandStatus(StrEnum):
    OPENED = "opened"  # a gate
    DONE = "done"  # port power


class AuditKind(StrEnum):
    COMMAND = "command"
    REQUEST = "request"
    REFUSALS = "refusals"


class AlertBrief(Out):
    id: str
    rule: str = Field(description="a rule id of docs/rules.md")
    subject: str = Field(description="cs-07, cs-07/3, g-hc3, g-hc3/north")
    severity: Severity
    state: AlertState


class Station(Out):
    id: str
    community: str
    garage: str | None = Field(description="the garage the station stands in, if any")
    name: str
    name_en: str
    online: bool = Field(description="false when offline or never heard from")
    ports_total: int
    ports_free: int = Field(description="idle ports of an online station with no fault")
    power_w: float = Field(description="power drawn by all ports, last telemetry")
    fault: bool = Field(
        description="a port or the station reports a fault, or a critical alert is open on it"
    )
    last_seen: datetime | None


class Port(Out):
    port: int
    state: PortStatus
    free: bool
    power_w: float | None
    energy_wh: float | None = Field(description="energy of the current session so far")
    temp_c: float | None
    since: datetime | None = Field(description="when the current state began")
    free_estimate_at: datetime | None = Field(
        description="while its state is charging (none while a fault is open): an estimate of"
        " when its charge will be done, from the"
        " port's energy so far and power now (docs/api.md); the bike may stay plugged in longer"
    )


class StationDetail(Station):
    temp_c: float | None = Field(description="cabinet temperature")
    leakage_ma: float | None
    smoke: bool | None
    ports: list[Port]
    alerts: list[AlertBrief] = Field(description="open alerts of this station and its ports")


class Garage(Out):
    id: str
    community: str
    name: str
    name_en: str
    online: bool
    capacity: int
    occupancy: int | None = Field(description="bicycles inside; null until reported")
    free: int | None = Field(description="free bays; null until occupancy is reported")
    full: bool
    last_seen: datetime | None
    smoke_alert: bool = Field(
        description="a smoke alert of this garage is open (active or acknowledged): residents"
        " are told to keep out; until it clears the gates are held open when the site's"
        " `fire_release_gates` is on"
    )


class Gate(Out):
    gate: str
    name: str = Field(description="the gate's name in Chinese (its id when the site gives none)")
    name_en: str = Field(description="the gate's name in English (its id when the site gives none)")
    open: bool | None = Field(description="null until the gate has reported")
    since: datetime | None = Field(description="when it last opened or closed")
    last_event: str | None
    last_event_at: datetime | None


class GarageDetail(Garage):
    temp_c: float | None
    smoke: bool | None
    gates: list[Gate]
    stations: list[str] = Field(description="charging stations inside the garage")
    alerts: list[AlertBrief]


class Community(Out):
    id: str
    name: str
    name_en: str
    stations: list[str]
    ports_total: int
    ports_free: int
    garages: list[str]
    capacity: int
    free_bays: int = Field(description="free bays of its garages that report occupancy")


class GateName(Out):
    gate: str
    name: str = Field(description="in Chinese (the gate's id when the site gives none)")
    name_en: str = Field(description="in English (the gate's id when the site gives none)")


class MeGarage(Out):
    id: str
    name: str
    name_en: str
    gates: list[str] = Field(description="gate ids, the `{gate}` of the open request")
    gate_names: list[GateName] = Field(description="the same gates with their names, in order")


class Me(Out):
    id: str
    name: str
    role: Role
    garages: list[MeGarage] = Field(description="the garages this resident may open")


class CommandResult(Out):
    command_id: str
    status: CommandStatus = Field(description="`opened` for a gate, `done` for port power")


class PowerRequest(BaseModel):
    # strict: `{"on": "yes"}` or `{"on": 1}` is a 422, never a power-on
    model_config = ConfigDict(extra="forbid", strict=True)

    on: bool = Field(description="true: power the port on; false: off")


class Action(Out):
    command_id: str
    action: str
    target: str
    outcome: CommandOutcome
    tries: int
    sent_at: datetime
    done_at: datetime | None
    error: str | None
    requested_by: str
    cause: str | None = Field(description=CAUSE)


class Alert(Out):
    id: str
    rule: str
    subject: str
    severity: Severity
    state: AlertState
    raised_at: datetime
    updated_at: datetime
    cleared_at: datetime | None
    value: float | None
    peak: float | None
    count: int
    acknowledged_by: str | None = Field(description="the staff member's id")
    acknowledged_by_name: str | None = Field(
        None,
        description="the staff member's name (`facilities staff add`); null when not "
        "acknowledged, or the person has since been removed",
    )
    acknowledged_at: datetime | None
    actions: list[Action]


class CutoffKind(StrEnum):
    PORT_OFF = "port_off"
    GATE_OPEN = "gate_open"


class SwitchOnBlocker(Out):
    """One reason a power-on of the port would be refused (409) now."""

    reason: str = Field(
        description="`unacknowledged`: a critical alert of the port or its station is still "
        "active; `firing`: a rule that cuts the port still fires on the latest readings; "
        "`offline`: the station is known offline"
    )
    rule: str | None = Field(description="the alert's or the firing rule's id; null: offline")
    subject: str = Field(description="the alert's or the rule's subject; the station: offline")
    alert_id: str | None = Field(description="`unacknowledged`: the alert to acknowledge")


class Cutoff(Out):
    """Something the service did to a device because of a rule, still in force."""

    device: str = Field(description="the station (a port off) or the garage (a gate open)")
    kind: CutoffKind
    port: int | None = Field(description="the port switched off")
    gate: str | None = Field(description="the gate held open")
    whole_station: bool = Field(description="switched off with the rest of its station")
    rule: str = Field(description="the rule that asked for it (docs/rules.md)")
    alert_id: str
    subject: str = Field(description="the alert's subject")
    since: datetime
    held: bool = Field(
        description="its alert is open: the service asserts it again whenever the device "
        "reports otherwise; false: the alert cleared (or a person switched the port on), "
        "listed until the port is reported on again"
    )
    confirmed: bool = Field(description="the device acknowledged it or reports it")
    switch_on: str | None = Field(
        description="how to switch the port back on (refused with 409 while the rule still "
        "fires or a critical alert of it is not acknowledged); null for a gate"
    )
    switch_on_blocked: list[SwitchOnBlocker] = Field(
        default_factory=list,
        description="why `switch_on` would be refused now, by the power route's own checks; "
        "empty: it would be sent (always empty for a gate)",
    )


class Cutoffs(Out):
    items: list[Cutoff] = Field(description="oldest first")


class Session(Out):
    port: int
    started_at: datetime
    ended_at: datetime
    energy_wh: float
    peak_w: float
    end_reason: EndReason


class PortReading(Out):
    port: int
    state: PortStatus
    voltage_v: float | None
    current_a: float | None
    power_w: float | None
    energy_wh: float | None
    temp_c: float | None


class TelemetrySample(Out):
    seq: int
    ts: datetime = Field(description="device time")
    received_at: datetime
    temp_c: float | None
    leakage_ma: float | None
    smoke: bool | None
    ports: list[PortReading]


class TelemetryBucket(Out):
    start: datetime = Field(description="start of the bucket (device time)")
    port: int
    samples: int
    avg_power_w: float | None
    max_power_w: float | None
    last_state: PortStatus


class AuditEntry(Out):
    at: datetime
    kind: AuditKind = Field(
        description="`command` (sent to a device), `request` (to the API) or `refusals` (failed"
        " authentications and refused requests of one client in one minute, counted)"
    )
    action: str
    target: str
    who: str | None = Field(description="`rules`, a staff or resident id; null: no valid token")
    outcome: str
    status: int | None = Field(description="requests: the HTTP status answered")
    detail: str | None
    command_id: str | None
    reason: str | None
    client: str | None = Field(description="requests: the client's address")
    cause: str | None = Field(description=f"commands: {CAUSE}")
    idempotency_key: str | None = Field(
        description="gate opens: the request's Idempotency-Key, if it had one"
    )


class Page(Out, Generic[T]):
    # every field is sent, those with defaults too: the document says so
    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)

    items: list[T]
    next: str | None = Field(description="path of the next page, or null on the last one")
    next_cursor: str | None = Field(
        None,
        description="the `cursor` of the next page (the same page as `next`), or null on the "
        "last one: for clients that build their own query",
    )


class TelemetrySamples(Page[TelemetrySample]):
    """A page of telemetry messages as received (no `step`)."""

    kind: Literal["raw"] = Field("raw", description="`raw`: the messages as received")


class TelemetryBuckets(Page[TelemetryBucket]):
    """A page of `step`-second buckets per port."""

    kind: Literal["buckets"] = Field("buckets", description="`buckets`: downsampled")
