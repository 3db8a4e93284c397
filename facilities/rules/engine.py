"""State → verdicts → alert transitions and actions. Pure: time comes in, nothing goes out."""

# What a message caused is `observation.py`'s; the desired state's upkeep is `upkeep.py`.

from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, datetime

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
from facilities.rules import upkeep
from facilities.rules.observation import (
    Observation,
    Resend,
    device_time,
    garage_look,
    looks_the_same_after,
    message_cause,
    station_look,
)
from facilities.rules.site_fit import fitted_garages, fitted_stations, in_site
from facilities.site import Site
from facilities.verdicts import Action, Severity, Verdict
from facilities.wire import Availability

# Observation and in_site are the engine's words for the live state and the service.
__all__ = ["Engine", "Observation", "in_site"]


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
        # Saved state and alerts only of what is still in the site (the service closes the
        # rest at start: docs/operations.md, "Removing a device").
        self.stations = fitted_stations(site, stations or {})
        self.garages = fitted_garages(site, garages or {})
        self.alerts: dict[tuple[str, str], Alert] = {
            key: alert for key, alert in (alerts or {}).items() if in_site(site, alert.subject)
        }
        # The keys of each device's open alerts, in the order of `alerts`: a message is judged
        # against its own device's alerts, not every open alert of the site (570 open
        # elsewhere cost 55 µs a message, docs/performance.md).
        self._keys_of: dict[str, dict[tuple[str, str], None]] = {}
        for key, alert in self.alerts.items():
            self._keys_of.setdefault(alert.device, {})[key] = None
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
        if observation.transitions or observation.resends:  # most messages cause nothing
            cause = message_cause(message)
            observation.transitions = [replace(t, cause=cause) for t in observation.transitions]
            observation.resends = [r._replace(cause=cause) for r in observation.resends]
        return observation

    def _observe(self, message: Accepted) -> Observation:
        at = datetime.fromtimestamp(message.received_at, UTC)
        self._due = []
        if message.route.kind in STATION_KINDS:
            return self._observe_station(message, at)
        return self._observe_garage(message, at)

    def _observe_station(self, message: Accepted, at: datetime) -> Observation:
        device, payload = message.route.device, message.payload
        live = self.stations.get(device)
        if live is None:
            return Observation()
        spec = self.site.stations[device]
        was_reachable = self.reachable(device, at)
        # what a resident sees, compared before and after unless it is sure to stay as it is
        same = isinstance(payload, StationTelemetry) and looks_the_same_after(live, payload)
        before = None if same else station_look(live)
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
        changed = device if before is not None and station_look(live) != before else None
        transitions = self._station(device, at, evidence=True)
        due = upkeep.port_reports(self.desired, device, payload, back=not was_reachable)
        return Observation(transitions, sessions, changed, self._resends(due, transitions))

    def _observe_garage(self, message: Accepted, at: datetime) -> Observation:
        device, gate_id, payload = message.route.device, message.route.gate, message.payload
        glive = self.garages.get(device)
        if glive is None:
            return Observation()
        before = garage_look(glive)
        was_reachable = self.reachable(device, at)
        if isinstance(payload, GarageTelemetry):
            garage.apply_telemetry(glive, payload, at)
        elif isinstance(payload, GateEvent) and gate_id is not None:
            skew_s = self.site.garages[device].thresholds.clock_skew_s
            device_at = device_time(payload.ts, message.received_at, skew_s)
            garage.apply_gate_event(glive, gate_id, payload, at, device_at=device_at)
        elif isinstance(payload, Availability):
            garage.apply_availability(glive, payload is Availability.ONLINE, at)
        else:
            return Observation()
        changed = device if garage_look(glive) != before else None
        transitions = self._garage(device, at, evidence=True)
        due = self.desired.unconfirmed(device) if not was_reachable else []
        if isinstance(payload, GateEvent) and gate_id is not None:
            gate = glive.gates[gate_id]
            if gate.open is not None:
                due += self.desired.gate_reported(device, gate_id, is_open=gate.open)
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

    def firing_cutoffs(self, station: str, port: int, now: datetime) -> list[tuple[RuleId, str]]:
        """The rules (with their subjects) that would cut this port (or its station) now, on
        the latest readings: a person may not switch it on while one fires (docs/rules.md,
        "Desired state")."""
        return self.firing_cutoffs_of(station, [port], now)[port]

    def firing_cutoffs_of(
        self, station: str, ports: Collection[int], now: datetime
    ) -> dict[int, list[tuple[RuleId, str]]]:
        """`firing_cutoffs` of several ports of a station, its rules evaluated once."""
        spec, live = self.site.stations[station], self.stations[station]
        verdicts = [v for rule in CHARGING_RULES.values() for v in rule(live, spec, now)]
        for garage_id, gspec in self.site.garages.items():
            if station in gspec.stations:
                glive = self.garages[garage_id]
                verdicts += [v for rule in GARAGE_RULES.values() for v in rule(glive, gspec, now)]
        firing = [v for v in verdicts if v.firing and v.actions]
        return {
            port: sorted(
                {
                    (v.rule, v.subject)
                    for v in firing
                    if any(upkeep.cuts(a, station, port) for a in v.actions)
                }
            )
            for port in ports
        }

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
        self._keep(key, transition.alert)
        return transition

    def _resends(self, due: list[Action], transitions: list[Transition]) -> list[Resend]:
        """What to send again (`upkeep.resends`), with what a verdict held again before."""
        due, self._due = due + self._due, []
        if not due:
            return []  # nothing due again: most messages
        out = upkeep.resends(self.desired, self.alerts.values(), due, transitions)
        for resend in out:
            upkeep.hint_end_reasons(self.stations, resend.alert.rule, (resend.action,))
        return out

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
            if (
                again
                and transition.change is Change.UPDATED
                and upkeep.contradicts(action, self.stations, self.garages)
            ):
                self._due.append(action)

    def alerts_of(self, device: str) -> list[Alert]:
        """The open alerts of `device` (its own and its ports' or gates')."""
        return [self.alerts[key] for key in self._keys_of.get(device, ())]

    def _keep(self, key: tuple[str, str], alert: Alert) -> None:
        self.alerts[key] = alert
        self._keys_of.setdefault(alert.device, {})[key] = None

    def _drop(self, key: tuple[str, str]) -> None:
        alert = self.alerts.pop(key, None)
        if alert is not None:
            keys = self._keys_of.get(alert.device)
            if keys is not None:
                keys.pop(key, None)
                if not keys:
                    del self._keys_of[alert.device]

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
        if not verdicts and device not in self._keys_of:
            return []  # nothing reported, nothing open: most messages
        reported = {(v.rule, v.subject) for v in verdicts}
        for key in list(self._keys_of.get(device, ())):
            alert = self.alerts[key]
            if alert.rule in evaluated and key not in reported:
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
                self._keep(key, transition.alert)
            else:
                self._drop(key)
            self._desire(verdict, transition, now)
            upkeep.hint_end_reasons(self.stations, transition.alert.rule, transition.actions)
            transitions.append(transition)
        return transitions
