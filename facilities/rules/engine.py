"""State → verdicts → alert transitions and actions. Pure: time comes in, nothing goes out."""

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import NamedTuple

from facilities import cutoffs
from facilities.alerts import (
    Alert,
    AlertState,
    Change,
    Transition,
    acknowledge,
    judge,
    reopen,
)
from facilities.charging import state as charging
from facilities.charging.payloads import StationEvent, StationTelemetry
from facilities.charging.rules import CHARGING_RULES, EVIDENCE_RULES
from facilities.garage import state as garage
from facilities.garage.payloads import GarageTelemetry, GateEvent
from facilities.garage.rules import GARAGE_RULES
from facilities.messages import STATION_KINDS, Accepted
from facilities.rule_ids import RuleId
from facilities.site import Site
from facilities.verdicts import Action, ActionKind, Severity, Verdict
from facilities.wire import Availability, CommandAck

# The reason a session ends when a rule switched its port off.
_END_REASONS = {
    RuleId.CHARGE_COMPLETE: charging.EndReason.FULL,
    RuleId.NO_LOAD: charging.EndReason.NO_LOAD,
    RuleId.PORT_OVERLOAD: charging.EndReason.OVERLOAD,
    RuleId.STATION_OVERLOAD: charging.EndReason.OVERLOAD,
    RuleId.SESSION_TOO_LONG: charging.EndReason.TOO_LONG,
}


def message_cause(message: Accepted) -> str:
    """Which device message this is, for the audit of what it caused: its kind, the device
    (and gate) of its topic, and its identity (`seq`, `ts`) as stored, e.g.
    `garage_telemetry g-hc3 seq 41 ts 1764400301.000`. Nothing is taken from the payload but
    those two numbers: the device is the topic's, which the broker's ACL ties to its user."""
    route, payload = message.route, message.payload
    source = f"{route.device}/{route.gate}" if route.gate is not None else route.device
    if isinstance(payload, Availability):
        return f"{route.kind} {source} {payload.value} received {message.received_at:.3f}"
    if isinstance(payload, CommandAck):
        return f"{route.kind} {source} id {payload.id}"
    return f"{route.kind} {source} seq {payload.seq} ts {payload.ts:.3f}"


class Resend(NamedTuple):
    """A cut-off asserted again, the alert that wants it, and the message that made it due."""

    action: Action
    alert: Alert
    cause: str | None = None


@dataclass(slots=True)
class Observation:
    """What one message caused: alert transitions (with actions), finished sessions, and
    whether the device's visible state (port states, online, occupancy, gates) changed."""

    transitions: list[Transition] = field(default_factory=list)
    sessions: list[charging.Session] = field(default_factory=list)
    changed: str | None = None  # the device, when its visible state changed
    # Cut-offs asserted again (the device contradicted one, or is back): docs/rules.md,
    # "Desired state". First cuts ride on their transitions' actions.
    resends: list[Resend] = field(default_factory=list)


def device_time(ts: float, received_at: float, skew_s: float) -> datetime | None:
    """A message's own time, when the device's clock is within `skew_s` of the server's (it
    then judges windows and the order of samples); None when it cannot be trusted."""
    return datetime.fromtimestamp(ts, UTC) if abs(ts - received_at) <= skew_s else None


def in_site(site: Site, subject: str) -> bool:
    """Whether an alert's subject (`cs-07`, `cs-07/3`, `g-hc3`, `g-hc3/north`) is still in
    the site file: a station or garage removed, a port past the station's count, a gate
    gone, are not (docs/operations.md, "Removing a device")."""
    device, _, part = subject.partition("/")
    station = site.stations.get(device)
    if station is not None:
        return not part or (part.isdigit() and 1 <= int(part) <= station.ports)
    garage_spec = site.garages.get(device)
    if garage_spec is not None:
        return not part or part in garage_spec.gates
    return False


def _station_look(live: charging.StationLive) -> tuple[object, ...]:
    """What a resident sees of a station: online, faults, each port's state."""
    ports = tuple((n, p.state, p.fault_code, p.since is None) for n, p in live.ports.items())
    return live.online, live.fault_code, ports


def _garage_look(live: garage.GarageLive) -> tuple[object, ...]:
    gates = tuple((g, gate.open, gate.last_event_at) for g, gate in live.gates.items())
    return live.online, live.occupancy, live.smoke, gates


class Engine:
    """Holds the live state of every device and the open alerts; evaluates the rules."""

    def __init__(
        self,
        site: Site,
        *,
        stations: dict[str, charging.StationLive] | None = None,
        garages: dict[str, garage.GarageLive] | None = None,
        alerts: dict[tuple[str, str], Alert] | None = None,
        desired: cutoffs.DesiredState | None = None,
    ) -> None:
        self.site = site
        self.stations = {
            s.id: charging.StationLive.new(s.id, s.ports) for s in site.stations.values()
        }
        # Saved state and alerts only of what is still in the site (the service closes the
        # rest at start: docs/operations.md, "Removing a device").
        for station_id, saved in (stations or {}).items():
            if station_id in site.stations:
                ports = site.stations[station_id].ports
                saved.ports = {n: p for n, p in saved.ports.items() if 1 <= n <= ports}
                self.stations[station_id] = saved
        self.garages = {g.id: garage.GarageLive.new(g.id, g.gates) for g in site.garages.values()}
        for garage_id, saved_garage in (garages or {}).items():
            if garage_id in site.garages:
                gates = site.garages[garage_id].gates
                saved_garage.gates = {g: v for g, v in saved_garage.gates.items() if g in gates}
                self.garages[garage_id] = saved_garage
        self.alerts: dict[tuple[str, str], Alert] = {
            key: alert for key, alert in (alerts or {}).items() if in_site(site, alert.subject)
        }
        self.desired = desired or cutoffs.DesiredState()
        self.desired.settle(
            {a.id for a in self.alerts.values()}, lambda subject: in_site(site, subject)
        )
        self._due: list[Action] = []  # held again by this message's evidence: see `_desire`
        self.listening_since: datetime | None = None  # set by the runtime: see `reachable`

    def observe(self, message: Accepted) -> Observation:
        """Fold a message into the live state and evaluate that device's rules at once
        (safety cut-offs act on the first evidence)."""
        observation = self._observe(message)
        cause = message_cause(message)
        observation.transitions = [replace(t, cause=cause) for t in observation.transitions]
        observation.resends = [r._replace(cause=cause) for r in observation.resends]
        return observation

    def _observe(self, message: Accepted) -> Observation:
        at = datetime.fromtimestamp(message.received_at, UTC)
        self._due = []
        device, payload = message.route.device, message.payload
        if message.route.kind in STATION_KINDS:
            live = self.stations.get(device)
            if live is None:
                return Observation()
            spec = self.site.stations[device]
            before = _station_look(live)
            was_reachable = self.reachable(device, at)
            if isinstance(payload, StationTelemetry):
                sessions = charging.apply_telemetry(
                    live,
                    payload,
                    at,
                    spec.thresholds,
                    device_at=device_time(
                        payload.ts, message.received_at, spec.thresholds.clock_skew_s
                    ),
                )
            elif isinstance(payload, StationEvent):
                sessions = charging.apply_event(live, payload, at)
            elif isinstance(payload, Availability):
                charging.apply_availability(live, payload is Availability.ONLINE, at)
                sessions = []
            else:
                return Observation()
            changed = device if _station_look(live) != before else None
            transitions = self._station(device, at, evidence=True)
            due = self._port_reports(device, payload, back=not was_reachable)
            return Observation(transitions, sessions, changed, self._resends(due, transitions))
        glive = self.garages.get(device)
        if glive is None:
            return Observation()
        before = _garage_look(glive)
        was_reachable = self.reachable(device, at)
        if isinstance(payload, GarageTelemetry):
            garage.apply_telemetry(glive, payload, at)
        elif isinstance(payload, GateEvent) and message.route.gate is not None:
            skew_s = self.site.garages[device].thresholds.clock_skew_s
            garage.apply_gate_event(
                glive,
                message.route.gate,
                payload,
                at,
                device_at=device_time(payload.ts, message.received_at, skew_s),
            )
        elif isinstance(payload, Availability):
            garage.apply_availability(glive, payload is Availability.ONLINE, at)
        else:
            return Observation()
        changed = device if _garage_look(glive) != before else None
        transitions = self._garage(device, at, evidence=True)
        due = self.desired.unconfirmed(device) if not was_reachable else []
        if isinstance(payload, GateEvent) and message.route.gate is not None:
            gate = glive.gates[message.route.gate]
            if gate.open is not None:
                due += self.desired.gate_reported(device, message.route.gate, is_open=gate.open)
        return Observation(transitions, changed=changed, resends=self._resends(due, transitions))

    def reachable(self, device: str, now: datetime) -> bool:
        """Whether a command published now can reach the device (docs/rules.md, "Desired
        state"): not to one known offline, whose broker session would queue it."""
        live = self.stations.get(device) or self.garages.get(device)
        spec = self.site.stations.get(device) or self.site.garages.get(device)
        if live is None or spec is None:
            return True
        return cutoffs.reachable(
            live.online, live.last_seen, spec.thresholds, now, listening_since=self.listening_since
        )

    def firing_cutoffs(self, station: str, port: int, now: datetime) -> list[str]:
        """The rules that would cut this port (or its station) now, on the latest readings:
        a person may not switch it on while one fires (docs/rules.md, "Desired state")."""
        spec, live = self.site.stations[station], self.stations[station]
        verdicts = [v for rule in CHARGING_RULES.values() for v in rule(live, spec, now)]
        for garage_id, gspec in self.site.garages.items():
            if station in gspec.stations:
                glive = self.garages[garage_id]
                verdicts += [v for rule in GARAGE_RULES.values() for v in rule(glive, gspec, now)]
        return sorted(
            {
                f"{v.rule} ({v.subject})"
                for v in verdicts
                if v.firing and any(_cuts(a, station, port) for a in v.actions)
            }
        )

    def tick(self, now: datetime) -> list[Transition]:
        """Evaluate every rule on the server's clock (timers, silence, clearing)."""
        transitions = []
        self._due = []  # what a tick holds again waits for the device's next report
        for station in self.stations:
            transitions += self._station(station, now, evidence=False)
        for garage_id in self.garages:
            transitions += self._garage(garage_id, now, evidence=False)
        return transitions

    def acknowledge(self, key: tuple[str, str], who: str, now: datetime) -> Transition | None:
        alert = self.alerts.get(key)
        transition = acknowledge(alert, who, now) if alert else None
        if transition:
            self.alerts[key] = transition.alert
        return transition

    def command_failed(self, subject: str, now: datetime) -> Transition:
        """A command got no ack after its tries, or was refused: raise (or update) the
        `command_failed` alert of the command's subject. It stays until acknowledged and
        is not cleared by a timer: nothing re-checks the device on its own. A failure after
        an acknowledgement is a new one: the alert is active again (docs/rules.md)."""
        verdict = Verdict(RuleId.COMMAND_FAILED, subject, firing=True, severity=Severity.CRITICAL)
        key = (verdict.rule, subject)
        current = self.alerts.get(key)
        if current is not None and current.state is AlertState.ACKNOWLEDGED:
            transition: Transition | None = reopen(current, now)
        else:
            transition = judge(current, verdict, now, clear_after_s=0, evidence=True)
        assert transition is not None  # a firing verdict always raises or updates
        self.alerts[key] = transition.alert
        return transition

    def _port_reports(self, device: str, payload: object, *, back: bool) -> list[Action]:
        """Cut-offs of the station due again after this message: all it has not confirmed
        when it is back from offline, and those its ports' reported states contradict."""
        due = self.desired.unconfirmed(device) if back else []
        if isinstance(payload, StationTelemetry):
            for reading in payload.ports:
                due += self.desired.port_reported(device, reading.port, reading.state)
        return due

    def _resends(self, due: list[Action], transitions: list[Transition]) -> list[Resend]:
        """What to send again, with the alert that wants it; not what this very message
        raised (those first cuts ride on their transitions)."""
        first = {
            a
            for t in transitions
            if t.change in (Change.RAISED, Change.ESCALATED)
            for a in t.actions
        }
        due, self._due = due + self._due, []
        resends = []
        for action in cutoffs.unique(due):
            if action in first:
                continue
            ids = {c.alert_id for c in self.desired.of(action.device) if c.action == action}
            alert = next((a for a in self.alerts.values() if a.id in ids and a.open), None)
            if alert is not None:
                resends.append(Resend(action, alert))
                self._hint_end_reasons(alert.rule, (action,))
        return resends

    def _desire(self, verdict: Verdict, transition: Transition, now: datetime) -> None:
        """Keep the desired state in step with an alert: its actions are held while it is
        open and fires; released when it clears. One held again after a person switched it
        on is due at once if the device's last report contradicts it."""
        alert = transition.alert
        if not alert.open:
            self.desired.release_alert(alert.id)
            return
        if not verdict.firing:
            return
        for action in verdict.actions:
            spec = self.site.stations.get(action.device)
            again = self.desired.hold(
                action,
                rule=alert.rule,
                alert_id=alert.id,
                subject=alert.subject,
                now=now,
                ports=spec.ports if spec else 0,
            )
            if again and transition.change is Change.UPDATED and self._contradicts(action):
                self._due.append(action)

    def _contradicts(self, action: Action) -> bool:
        """Whether the device's last report says otherwise than `action` wants."""
        if action.kind is ActionKind.OPEN_GATE:
            glive = self.garages.get(action.device)
            gate = glive.gates.get(action.gate or "") if glive else None
            return gate is not None and gate.open is False
        live = self.stations.get(action.device)
        if live is None:
            return False
        return any(
            p.since is not None and p.state in cutoffs.POWERED
            for n, p in live.ports.items()
            if action.kind is ActionKind.POWER_OFF_STATION or n == action.port
        )

    def _station(self, station: str, now: datetime, *, evidence: bool) -> list[Transition]:
        spec, live = self.site.stations[station], self.stations[station]
        rules = EVIDENCE_RULES if evidence else CHARGING_RULES
        verdicts = [v for rule in rules.values() for v in rule(live, spec, now)]
        return self._judge(
            station, rules.keys(), verdicts, now, spec.thresholds.clear_after_s, evidence
        )

    def _garage(self, garage_id: str, now: datetime, *, evidence: bool) -> list[Transition]:
        spec, live = self.site.garages[garage_id], self.garages[garage_id]
        verdicts = [v for rule in GARAGE_RULES.values() for v in rule(live, spec, now)]
        return self._judge(
            garage_id, GARAGE_RULES.keys(), verdicts, now, spec.thresholds.clear_after_s, evidence
        )

    def _judge(
        self,
        device: str,
        evaluated: Collection[RuleId],
        verdicts: list[Verdict],
        now: datetime,
        clear_after_s: float,
        evidence: bool,
    ) -> list[Transition]:
        """Judge what the rules reported, and count as clear every open alert of `device`
        whose rule was evaluated and did not report its subject."""
        reported = {(v.rule, v.subject) for v in verdicts}
        for key, alert in self.alerts.items():
            if (
                alert.rule in evaluated
                and key not in reported
                and (alert.subject == device or alert.subject.startswith(device + "/"))
            ):
                verdicts.append(
                    Verdict(alert.rule, alert.subject, False, alert.severity, clearable=True)
                )
        transitions = []
        for verdict in verdicts:
            key = (verdict.rule, verdict.subject)
            transition = judge(
                self.alerts.get(key), verdict, now, clear_after_s=clear_after_s, evidence=evidence
            )
            if transition is None:
                continue
            if transition.alert.open:
                self.alerts[key] = transition.alert
            else:
                self.alerts.pop(key, None)
            self._desire(verdict, transition, now)
            self._hint_end_reasons(transition.alert.rule, transition.actions)
            transitions.append(transition)
        return transitions

    def _hint_end_reasons(self, rule: RuleId, actions: Collection[Action]) -> None:
        """Ports a rule switches off end their sessions with the rule's reason."""
        reason = _END_REASONS.get(rule, charging.EndReason.FAULT)
        for action in actions:
            live = self.stations.get(action.device)
            if live is None:
                continue
            if action.kind is ActionKind.POWER_OFF_PORT and action.port in live.ports:
                live.ports[action.port].end_hint = reason
            elif action.kind is ActionKind.POWER_OFF_STATION:
                for port in live.ports.values():
                    port.end_hint = reason


def _cuts(action: Action, station: str, port: int) -> bool:
    """Whether `action` switches this port off (alone or with its station)."""
    if action.device != station:
        return False
    return action.kind is ActionKind.POWER_OFF_STATION or (
        action.kind is ActionKind.POWER_OFF_PORT and action.port == port
    )
