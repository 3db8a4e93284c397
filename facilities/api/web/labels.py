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


# -- the staff console only ------------------------------------------------------------------


def console_labels(language: str) -> dict[str, Any]:
    """The staff console's own texts in `language` (staff.js): alert values with their
    units, commands, places, why a port may not be switched on yet."""
    _ = translations(language).gettext
    return {
        "values": measures(_),
        "peak": _("highest %(value)s"),
        "duration": {
            "hours": _("%(h)s h %(m)s min"),
            "minutes": _("%(m)s min"),
            "seconds": _("%(s)s s"),
        },
        "commands": {
            "power_off": _("Switch off"),
            "power_on": _("Switch on"),
            "open": _("Open the gate"),
        },
        "outcome": _("%(command)s · %(target)s: %(outcome)s"),
        "outcomes": {"abandoned": _("abandoned: the service stopped meanwhile")},
        "station_part": _("socket %(port)s at %(station)s"),
        "garage_part": _("%(gate)s at %(garage)s"),
        "whole_station": _("%(station)s (whole station, %(count)s sockets off)"),
        "blocked": {
            "unacknowledged": _("acknowledge %(rules)s first"),
            "firing": _("%(rules)s still over the limit"),
            "offline": _("the station is offline"),
        },
        "not_yet": _("Not yet safe to switch on: %(why)s"),
        "switch_on_all": _("Switch the station on"),
        "switching": _("Switching on…"),
        # between the rules of one entry, and between the reasons it stays off
        "comma": _(", "),
        "semicolon": _("; "),
        # a power request refused, by its status (docs/api.md); the API's detail is English
        "refused": {
            409: _("Not done: not safe yet, or the station is offline."),
            502: _("Not done: the station refused."),
            503: _("Not done: the service has no link to the devices."),
            504: _("Not done: the station did not answer."),
        },
    }


def measures(_: Gettext) -> dict[RuleId, dict[str, Any]]:
    """How the console writes each rule's `value` (and `peak`): a text around the number,
    the digits after the point, and whether it is a number of seconds (written as h/min/s).
    A rule without a value (smoke, a fault, a forced gate, a failed command) is not here."""

    def number(text: str, digits: int) -> dict[str, Any]:
        return {"text": text, "digits": digits, "duration": False}

    def seconds(text: str) -> dict[str, Any]:
        return {"text": text, "digits": 0, "duration": True}

    return {
        RuleId.PORT_OVERLOAD: number(_("%(value)s W"), 0),
        RuleId.STATION_OVERLOAD: number(_("%(value)s W"), 0),
        RuleId.PORT_OVER_TEMPERATURE: number(_("%(value)s °C"), 1),
        RuleId.OVER_TEMPERATURE: number(_("%(value)s °C"), 1),
        RuleId.TEMPERATURE_RISE: number(_("rose %(value)s °C"), 1),
        RuleId.LEAKAGE: number(_("%(value)s mA"), 1),
        RuleId.OFFLINE: seconds(_("silent for %(value)s")),
        RuleId.CLOCK_SKEW: seconds(_("clock off by %(value)s")),
        RuleId.CHARGE_COMPLETE: seconds(_("trickling for %(value)s")),
        RuleId.NO_LOAD: seconds(_("nothing drawn for %(value)s")),
        RuleId.SESSION_TOO_LONG: seconds(_("charging for %(value)s")),
        RuleId.OVER_CAPACITY: number(_("%(value)s bicycles inside"), 0),
        RuleId.GATE_HELD_OPEN: seconds(_("open for %(value)s")),
        RuleId.ACCESS_DENIED_BURST: number(_("%(value)s refused entries"), 0),
    }
