"""A charging station's live state and its ports' (what rules and views read); its sessions."""

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from facilities.charging.payloads import PortState

# Short histories the rules read: the last few power samples (overload needs 2 in a row),
# and for temperature_rise the rising minima of the last window (see `_remember`), capped so
# that a device flooding telemetry cannot make the state grow.
POWER_SAMPLES_KEPT = 10
TEMPERATURES_KEPT = 256
FAULT_CRITICAL_CODES = frozenset({"over_current", "ground_fault", "over_temperature"})


class EndReason(StrEnum):
    """Why a charging session ended."""

    UNPLUG = "unplug"
    FULL = "full"
    NO_LOAD = "no_load"
    OVERLOAD = "overload"
    REMOTE = "remote"
    TOO_LONG = "too_long"
    FAULT = "fault"


@dataclass(frozen=True, slots=True)
class Session:
    """A finished charging session of one port."""

    station: str
    port: int
    started_at: datetime
    ended_at: datetime
    energy_wh: float
    peak_w: float
    end_reason: EndReason


@dataclass(slots=True)
class PortLive:
    port: int
    state: PortState = PortState.IDLE
    since: datetime | None = None  # when the current state began
    power_w: float | None = None
    energy_wh: float | None = None
    temp_c: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    powers: deque[float] = field(default_factory=lambda: deque(maxlen=POWER_SAMPLES_KEPT))
    temps: deque[tuple[datetime, float]] = field(
        default_factory=lambda: deque(maxlen=TEMPERATURES_KEPT)
    )
    session_started: datetime | None = None
    session_peak_w: float = 0.0
    session_energy_wh: float = 0.0
    # Why the port is about to go off, when the service itself switched it off (a rule's
    # power_off): the session then ends with that reason rather than `remote`.
    end_hint: EndReason | None = None
    low_power_since: datetime | None = None  # charge_complete: drawing < charge_complete_w
    no_load_since: datetime | None = None  # no_load: on, < no_load_w, < no_load_wh
    fault_code: str | None = None  # an open `fault` event on this port


@dataclass(slots=True)
class StationLive:
    station: str
    ports: dict[int, PortLive] = field(default_factory=dict)
    online: bool | None = None
    last_seen: datetime | None = None
    temp_c: float | None = None
    leakage_ma: float | None = None
    smoke: bool | None = None
    total_powers: deque[float] = field(default_factory=lambda: deque(maxlen=POWER_SAMPLES_KEPT))
    temps: deque[tuple[datetime, float]] = field(
        default_factory=lambda: deque(maxlen=TEMPERATURES_KEPT)
    )
    fault_code: str | None = None  # an open station-wide `fault` event
    clock_skew_s: float | None = None  # device ts minus server time, last telemetry
    # The time and seq of the newest telemetry folded in, on the clock the windows use: the
    # device's while its clock is within `clock_skew_s` of the server's (`on_device_clock`),
    # else the receive time. A sample older than it, and sent before it (a lower seq), is
    # late: it joins the windows, nothing else.
    latest_at: datetime | None = None
    latest_seq: int | None = None
    on_device_clock: bool | None = None

    @classmethod
    def new(cls, station: str, ports: int) -> "StationLive":
        return cls(station, {n: PortLive(n) for n in range(1, ports + 1)})

    def restored(self) -> "StationLive":
        """Put back the bounds that a JSON round trip loses (deque maxlen)."""
        self.total_powers = deque(self.total_powers, maxlen=POWER_SAMPLES_KEPT)
        self.temps = deque(self.temps, maxlen=TEMPERATURES_KEPT)
        for port in self.ports.values():
            port.powers = deque(port.powers, maxlen=POWER_SAMPLES_KEPT)
            port.temps = deque(port.temps, maxlen=TEMPERATURES_KEPT)
        return self


def shown_state(port: PortLive) -> str:
    """What a resident is told of a port: its reported state, `fault` while a fault event is
    open, `unknown` until it has reported."""
    if port.since is None:
        return "unknown"
    return "fault" if port.fault_code is not None else port.state.value


def is_free(live: StationLive, port: PortLive, *, hazards: Collection[str]) -> bool:
    """Whether a resident may use the port now: the station online and without a fault, the
    port reported idle and without a fault, and no open critical alert on the station or the
    port (`hazards`: the subjects of open critical alerts). A cut the device never carried
    out leaves the port reporting `idle` under its alert: it is not free for all that."""
    return (
        live.online is True
        and live.fault_code is None
        and port.since is not None
        and port.state is PortState.IDLE
        and port.fault_code is None
        and live.station not in hazards
        and f"{live.station}/{port.port}" not in hazards
    )
