"""Every rule's id: the name in alerts, cut-offs, alert topics and docs/rules.md."""

from enum import StrEnum


class RuleId(StrEnum):
    """The rules of docs/rules.md ("Charging rules", "Garage rules"). A `StrEnum`: the value
    is what is stored, sent as JSON and put in `facilities/alerts/{rule}/{subject}`."""

    # charging: evidence
    PORT_OVERLOAD = "port_overload"
    STATION_OVERLOAD = "station_overload"
    PORT_OVER_TEMPERATURE = "port_over_temperature"
    OVER_TEMPERATURE = "over_temperature"  # a station's cabinet, or a garage
    TEMPERATURE_RISE = "temperature_rise"
    LEAKAGE = "leakage"
    SMOKE = "smoke"  # a station's cabinet, or a garage
    DEVICE_FAULT = "device_fault"
    # charging: timers
    CHARGE_COMPLETE = "charge_complete"
    NO_LOAD = "no_load"
    SESSION_TOO_LONG = "session_too_long"
    # garage
    OVER_CAPACITY = "over_capacity"
    GATE_HELD_OPEN = "gate_held_open"
    GATE_FORCED = "gate_forced"
    ACCESS_DENIED_BURST = "access_denied_burst"
    # any device
    OFFLINE = "offline"
    CLOCK_SKEW = "clock_skew"
    # raised by the command path, not by a rule function: a command refused or not acked
    COMMAND_FAILED = "command_failed"
