"""The texts the pages' scripts write (states, alerts, rules, cut-offs), in one language."""

# Each group is its own function for legibility; `_` is the catalog's gettext, so that
# `make messages` finds every text here (babel.cfg).

from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from facilities.api.web.i18n import translations
from facilities.rule_ids import RuleId

# The district's clock for times printed in a page (a phone re-renders live updates in its own).
LOCAL_TIME = ZoneInfo("Asia/Shanghai")

Gettext = Callable[[str], str]


def labels(language: str) -> dict[str, Any]:
    """Every text the pages' scripts write, in `language`."""
    _ = translations(language).gettext
    return (
        _device_labels(_)
        | _alert_labels(_)
        | {"rules": rule_names(_)}
        | _cutoff_labels(_)
        | _console_labels(_)
    )


def _device_labels(_: Gettext) -> dict[str, Any]:
    return {
        "states": {
            "idle": _("Free"),
            "charging": _("Charging"),
            "full": _("Charged, waiting to be unplugged"),
            "fault": _("Fault"),
            "disabled": _("Switched off"),
            "unknown": _("No data yet"),
        },
        "free_at": _("charged by about %(time)s"),
        "time_zone": LOCAL_TIME.key,
        "gate_open": _("Open"),
        "gate_closed": _("Closed"),
        "unknown": _("No data yet"),
        "updated": _("Updated"),
    }


def _alert_labels(_: Gettext) -> dict[str, Any]:
    return {
        "severity": {
            "critical": _("Critical"),
            "warning": _("Warning"),
            "info": _("Information"),
        },
        "acknowledge": _("Acknowledge"),
        "acknowledged_by": _("acknowledged by %(who)s"),
        "raised_at": _("raised %(time)s"),
        "no_actions": _("No command sent"),
        "outcomes": {
            "acked": _("done"),
            "refused": _("refused by the device"),
            "timeout": _("no answer from the device"),
            "pending": _("waiting for the device"),
        },
    }


def rule_names(_: Gettext) -> dict[RuleId, str]:
    """A person's name for each rule (the staff console shows `labels.rules[rule]`)."""
    return {
        RuleId.PORT_OVERLOAD: _("Port overload"),
        RuleId.STATION_OVERLOAD: _("Station overload"),
        RuleId.PORT_OVER_TEMPERATURE: _("Socket overheating"),
        RuleId.OVER_TEMPERATURE: _("Overheating"),
        RuleId.TEMPERATURE_RISE: _("Temperature rising fast"),
        RuleId.LEAKAGE: _("Leakage current"),
        RuleId.SMOKE: _("Smoke"),
        RuleId.DEVICE_FAULT: _("Device fault"),
        RuleId.OFFLINE: _("Offline"),
        RuleId.CLOCK_SKEW: _("Device clock wrong"),
        RuleId.CHARGE_COMPLETE: _("Charge complete, port switched off"),
        RuleId.NO_LOAD: _("Nothing charging, port switched off"),
        RuleId.SESSION_TOO_LONG: _("Charging too long"),
        RuleId.OVER_CAPACITY: _("More bicycles than bays"),
        RuleId.GATE_HELD_OPEN: _("Gate held open"),
        RuleId.GATE_FORCED: _("Gate forced open"),
        RuleId.ACCESS_DENIED_BURST: _("Many refused entries"),
        RuleId.COMMAND_FAILED: _("Command not carried out"),
    }


def _cutoff_labels(_: Gettext) -> dict[str, Any]:
    return {
        "cutoff_off": _("switched off %(time)s"),
        "cutoff_open": _("held open since %(time)s"),
        "cutoff_station": _("with the whole station"),
        "cutoff_held": _("kept so while the alert is open"),
        "cutoff_released": _("the alert is over: switch it on when ready"),
        "switch_on": _("Switch on"),
    }


def _console_labels(_: Gettext) -> dict[str, Any]:
    return {
        "bad_token": _("This token is not valid for staff."),
        "power_done": _("Done: the station confirmed."),
        "power_failed": _("Not done: %(detail)s"),
    }
