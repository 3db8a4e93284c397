"""Charging timers of docs/rules.md: what only the clock makes true, evaluated by the tick."""

from collections.abc import Callable
from datetime import datetime

from facilities.charging.live import PortLive, StationLive
from facilities.charging.payloads import PortState
from facilities.charging.subjects import port_off, port_subject
from facilities.rule_ids import RuleId
from facilities.site import Station
from facilities.verdicts import Severity, Verdict

ChargingRule = Callable[[StationLive, Station, datetime], list[Verdict]]


def _timers(
    rule: RuleId,
    live: StationLive,
    spec: Station,
    started: Callable[[PortLive], datetime | None],
    after_s: float,
    now: datetime,
    severity: Severity,
    *,
    strictly: bool = False,
) -> list[Verdict]:
    """Each port whose timer (`started`) has run `after_s` (or more, unless `strictly`)."""
    verdicts = []
    for port in live.ports.values():
        since = started(port)
        if since is None:
            continue
        elapsed = (now - since).total_seconds()
        if elapsed > after_s or (elapsed == after_s and not strictly):
            verdicts.append(
                Verdict(
                    rule,
                    port_subject(spec.id, port.port),
                    True,
                    severity,
                    value=elapsed,
                    actions=port_off(spec.id, port.port),
                )
            )
    return verdicts


def charge_complete(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """Plugged in and drawing under `charge_complete_w` for 120 min (充满自停): port off."""
    return _timers(
        RuleId.CHARGE_COMPLETE,
        live,
        spec,
        lambda p: p.low_power_since,
        spec.thresholds.charge_complete_s,
        now,
        Severity.INFO,
    )


def no_load(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """Switched on, nothing drawing and nothing delivered for 5 min: port off."""
    return _timers(
        RuleId.NO_LOAD,
        live,
        spec,
        lambda p: p.no_load_since,
        spec.thresholds.no_load_s,
        now,
        Severity.INFO,
    )


def session_too_long(live: StationLive, spec: Station, now: datetime) -> list[Verdict]:
    """Charging for more than 8 h (strictly): port off."""
    return _timers(
        RuleId.SESSION_TOO_LONG,
        live,
        spec,
        lambda p: p.session_started if p.state is PortState.CHARGING else None,
        spec.thresholds.session_max_s,
        now,
        Severity.WARNING,
        strictly=True,
    )


# Timers: only the clock makes them true, so the tick (every second) evaluates them.
TIMER_RULES: dict[RuleId, ChargingRule] = {
    RuleId.CHARGE_COMPLETE: charge_complete,
    RuleId.NO_LOAD: no_load,
    RuleId.SESSION_TOO_LONG: session_too_long,
}
