"""The engine's side of the desired state: cut-offs due again, reports that contradict one."""

# And the reason a rule's cut ends a charging session with.

from collections.abc import Collection, Mapping

from facilities import cutoffs
from facilities.alerts import Alert, Change, Transition
from facilities.charging import live as charging
from facilities.charging.payloads import StationTelemetry
from facilities.garage import state as garage
from facilities.rule_ids import RuleId
from facilities.rules.observation import Resend
from facilities.verdicts import Action, ActionKind

# The reason a session ends when a rule switched its port off.
_END_REASONS = {
    RuleId.CHARGE_COMPLETE: charging.EndReason.FULL,
    RuleId.NO_LOAD: charging.EndReason.NO_LOAD,
    RuleId.PORT_OVERLOAD: charging.EndReason.OVERLOAD,
    RuleId.STATION_OVERLOAD: charging.EndReason.OVERLOAD,
    RuleId.SESSION_TOO_LONG: charging.EndReason.TOO_LONG,
}


def port_reports(
    desired: cutoffs.DesiredState, device: str, payload: object, *, back: bool
) -> list[Action]:
    """Cut-offs of the station due again after this message: all it has not confirmed
    when it is back from offline, and those its ports' reported states contradict."""
    due = desired.unconfirmed(device) if back else []
    if isinstance(payload, StationTelemetry) and desired.of(device):  # most hold none
        for reading in payload.ports:
            due += desired.port_reported(device, reading.port, reading.state)
    return due


def resends(
    desired: cutoffs.DesiredState,
    alerts: Collection[Alert],
    due: list[Action],
    transitions: list[Transition],
) -> list[Resend]:
    """What to send again, with the open alert that wants it; not what this very message
    raised (those first cuts ride on their transitions)."""
    first = {
        a for t in transitions if t.change in (Change.RAISED, Change.ESCALATED) for a in t.actions
    }
    out = []
    for action in cutoffs.unique(due):
        if action in first:
            continue
        ids = {c.alert_id for c in desired.of(action.device) if c.action == action}
        alert = next((a for a in alerts if a.id in ids and a.open), None)
        if alert is not None:
            out.append(Resend(action, alert))
    return out


def contradicts(
    action: Action,
    stations: Mapping[str, charging.StationLive],
    garages: Mapping[str, garage.GarageLive],
) -> bool:
    """Whether the device's last report says otherwise than `action` wants."""
    if action.kind is ActionKind.OPEN_GATE:
        glive = garages.get(action.device)
        gate = glive.gates.get(action.gate or "") if glive else None
        return gate is not None and gate.open is False
    live = stations.get(action.device)
    if live is None:
        return False
    return any(
        p.since is not None and p.state in cutoffs.POWERED
        for n, p in live.ports.items()
        if action.kind is ActionKind.POWER_OFF_STATION or n == action.port
    )


def hint_end_reasons(
    stations: Mapping[str, charging.StationLive], rule: RuleId, actions: Collection[Action]
) -> None:
    """Ports a rule switches off end their sessions with the rule's reason."""
    reason = _END_REASONS.get(rule, charging.EndReason.FAULT)
    for action in actions:
        live = stations.get(action.device)
        if live is None:
            continue
        if action.kind is ActionKind.POWER_OFF_PORT and action.port in live.ports:
            live.ports[action.port].end_hint = reason
        elif action.kind is ActionKind.POWER_OFF_STATION:
            for port in live.ports.values():
                port.end_hint = reason


def cuts(action: Action, station: str, port: int) -> bool:
    """Whether `action` switches this port off (alone or with its station)."""
    if action.device != station:
        return False
    return action.kind is ActionKind.POWER_OFF_STATION or (
        action.kind is ActionKind.POWER_OFF_PORT and action.port == port
    )
