"""What the service wants each device to be: these ports off, these gates open, and why."""

# docs/rules.md, "Desired state". A rule's action (port off, station off, gate open) becomes a
# cut-off here. While its alert is open the cut-off is *held*: whenever the device says
# otherwise (a cut port reported idle after a reboot, a gate reported closed during smoke, a
# device back from offline that never got the command) the command is due again. When the
# alert clears the cut-off is no longer held but stays, for staff to see, until the port is
# back on. Pure: the engine feeds it what devices report; the runtime sends what it says.

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime

from facilities.charging.payloads import PortState
from facilities.rule_ids import RuleId
from facilities.thresholds import Thresholds
from facilities.verdicts import Action, ActionKind

# A port reported in one of these states is powered: a cut-off says it should not be.
POWERED = frozenset({PortState.IDLE, PortState.CHARGING, PortState.FULL})

Key = tuple[str, int | None, str | None, str]  # device, port, gate, alert id


@dataclass(frozen=True, slots=True)
class Cutoff:
    """One thing the service did to a device because of an alert: a port switched off (alone
    or with its whole station) or a gate opened; why, and since when."""

    device: str
    port: int | None  # the port switched off (one record per port for a whole station)
    gate: str | None  # the gate opened
    whole_station: bool
    rule: RuleId
    alert_id: str
    subject: str  # the alert's subject
    since: datetime
    held: bool = True  # its alert is open: re-asserted whenever the device says otherwise
    confirmed: bool = False  # acked, or reported as wanted, since it was last asserted

    @property
    def key(self) -> Key:
        return (self.device, self.port, self.gate, self.alert_id)

    @property
    def action(self) -> Action:
        """The command that asserts it."""
        if self.gate is not None:
            return Action(ActionKind.OPEN_GATE, self.device, gate=self.gate)
        if self.whole_station:
            return Action(ActionKind.POWER_OFF_STATION, self.device)
        return Action(ActionKind.POWER_OFF_PORT, self.device, port=self.port)


def reachable(
    online: bool | None,
    last_seen: datetime | None,
    t: Thresholds,
    now: datetime,
    *,
    listening_since: datetime | None = None,
) -> bool:
    """Whether a command published now can reach the device: not when its Will said offline,
    nor when it has been silent as long as the `offline` rule allows (docs/rules.md). Silence
    counts from `listening_since` at the earliest (the service's own start: a device is not
    silent because the service was down). A device never heard from is not known to be
    offline: it gets the command."""
    if online is False:
        return False
    if last_seen is None:
        return True
    heard = max(last_seen, listening_since) if listening_since else last_seen
    return (now - heard).total_seconds() < t.telemetry_interval_s * t.offline_intervals


class DesiredState:
    """Every cut-off of the district, keyed by (device, port, gate, alert id)."""

    def __init__(self, cutoffs: Iterable[Cutoff] = ()) -> None:
        # By device: every message of a device asks about that device's cut-offs only.
        self._devices: dict[str, dict[Key, Cutoff]] = {}
        for cutoff in cutoffs:
            self._devices.setdefault(cutoff.device, {})[cutoff.key] = cutoff
        self.version = 0  # moves on every change: the runtime stores it when it moved

    def __iter__(self) -> Iterator[Cutoff]:
        every = [c for mine in self._devices.values() for c in mine.values()]
        return iter(sorted(every, key=lambda c: (c.since, c.key)))

    def __len__(self) -> int:
        return sum(len(mine) for mine in self._devices.values())

    def of(self, device: str) -> list[Cutoff]:
        mine = self._devices.get(device)
        return list(mine.values()) if mine else []

    def _put(self, cutoff: Cutoff) -> None:
        mine = self._devices.setdefault(cutoff.device, {})
        if mine.get(cutoff.key) != cutoff:
            mine[cutoff.key] = cutoff
            self.version += 1

    def _drop(self, key: Key) -> None:
        mine = self._devices.get(key[0], {})
        if mine.pop(key, None) is not None:
            self.version += 1
            if not mine:
                del self._devices[key[0]]

    def settle(self, open_alerts: Collection[str], known: Callable[[str], bool]) -> None:
        """At start: what a cleared alert held is no longer held (it may have cleared after
        the last save), and a port or gate no longer in the site (`known`, given the
        target's subject) has no cut-offs."""
        for cutoff in list(self):
            part = cutoff.gate if cutoff.gate is not None else cutoff.port
            if not known(f"{cutoff.device}/{part}"):
                self._drop(cutoff.key)
            elif cutoff.held and cutoff.alert_id not in open_alerts:
                if cutoff.gate is not None:
                    self._drop(cutoff.key)
                else:
                    self._put(replace(cutoff, held=False))

    def hold(
        self,
        action: Action,
        *,
        rule: RuleId,
        alert_id: str,
        subject: str,
        now: datetime,
        ports: int,
    ) -> bool:
        """An open alert wants `action` (`ports`: the station's port count, for a whole
        station). Returns whether something was not held before (new, or released earlier
        by a person and now wanted again)."""
        if action.kind is ActionKind.OPEN_GATE:
            targets: list[tuple[int | None, str | None, bool]] = [(None, action.gate, False)]
        elif action.kind is ActionKind.POWER_OFF_STATION:
            targets = [(n, None, True) for n in range(1, ports + 1)]
        else:
            targets = [(action.port, None, False)]
        changed = False
        for port, gate, whole in targets:
            old = self._devices.get(action.device, {}).get((action.device, port, gate, alert_id))
            if old is not None and old.held:
                continue
            changed = True
            self._put(Cutoff(action.device, port, gate, whole, rule, alert_id, subject, since=now))
        return changed

    def release_alert(self, alert_id: str) -> None:
        """The alert cleared: its cut-offs are no longer held. A gate is free to close; a
        port stays listed until it is back on."""
        for cutoff in list(self):
            if cutoff.alert_id != alert_id:
                continue
            if cutoff.gate is not None:
                self._drop(cutoff.key)
            elif cutoff.held:
                self._put(replace(cutoff, held=False))

    def release_port(self, device: str, port: int) -> None:
        """A person switches the port on: nothing holds it off any more, until firing
        evidence of an open alert asks for it again (`hold`)."""
        for cutoff in self.of(device):
            if cutoff.port == port and cutoff.held:
                self._put(replace(cutoff, held=False))

    def confirm(self, action: Action) -> None:
        """The device acknowledged the command that asserts these cut-offs."""
        for cutoff in self.of(action.device):
            if cutoff.held and cutoff.action == action:
                self._put(replace(cutoff, confirmed=True))

    def port_reported(self, device: str, port: int, state: PortState) -> list[Action]:
        """A port's reported state: `disabled` confirms its cut-offs; powered contradicts a
        held one (its command is due again) and ends one no longer held (back on)."""
        due = []
        for cutoff in self.of(device):
            if cutoff.port != port or cutoff.gate is not None:
                continue
            if state is PortState.DISABLED:
                if cutoff.held and not cutoff.confirmed:
                    self._put(replace(cutoff, confirmed=True))
            elif state in POWERED:
                if cutoff.held:
                    self._put(replace(cutoff, confirmed=False))
                    due.append(cutoff.action)
                else:
                    self._drop(cutoff.key)
        return due

    def gate_reported(self, device: str, gate: str, *, is_open: bool) -> list[Action]:
        """A gate's reported position: open confirms, closed contradicts a held open."""
        due = []
        for cutoff in self.of(device):
            if cutoff.gate != gate or not cutoff.held:
                continue
            self._put(replace(cutoff, confirmed=is_open))
            if not is_open:
                due.append(cutoff.action)
        return due

    def unconfirmed(self, device: str) -> list[Action]:
        """Held cut-offs of `device` it has not confirmed (never sent because it was offline,
        or sent and not acknowledged): due when it is back."""
        return [c.action for c in self.of(device) if c.held and not c.confirmed]

    def holding(self, device: str, port: int) -> list[Cutoff]:
        """The held cut-offs that keep this port off."""
        return [c for c in self.of(device) if c.port == port and c.held]


def unique(actions: Iterable[Action]) -> list[Action]:
    """Each action once, in order (a whole station is one command, not one per port)."""
    return list(dict.fromkeys(actions))
