"""Copies of the live state of devices another instance owns: shown, never judged
(docs/scaling.md, "Several instances")."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from pydantic import TypeAdapter

from facilities.alerts import Alert, AlertState, Change, Transition, device_of
from facilities.charging.live import StationLive
from facilities.cutoffs import Cutoff
from facilities.garage.state import GarageLive
from facilities.rules.site_fit import fitted_garages, fitted_stations
from facilities.site import Site
from facilities.switch_on import Blocker, Hold, offline, unacknowledged


@dataclass(frozen=True, slots=True)
class LiveCopy:
    """One device's live state as its owner sees it: its state, its open alerts and the
    cut-offs held on it (what the API shows of a device, and nothing it does not)."""

    device: str
    station: StationLive | None = None
    garage: GarageLive | None = None
    alerts: tuple[Alert, ...] = ()
    cutoffs: tuple[Cutoff, ...] = ()
    # each port cut off, with why switching it on would be refused now (the owner's guards)
    held_off: tuple[tuple[int, tuple[Blocker, ...]], ...] = ()


_COPY = TypeAdapter(LiveCopy)


def encode(copy: LiveCopy) -> bytes:
    return _COPY.dump_json(copy)


def decode(payload: bytes) -> LiveCopy:
    """A copy read back (ValueError if it is not one)."""
    copy = _COPY.validate_json(payload)
    if copy.station is not None:
        copy.station.restored()
    return copy


class Copies:
    """The last copy of each device of `site` (the devices this instance does not own), new
    devices until their owner's first copy comes; kept under the live state's lock."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.stations = fitted_stations(site, {})
        self.garages = fitted_garages(site, {})
        self.alerts: dict[tuple[str, str], Alert] = {}
        self._cutoffs: dict[str, tuple[Cutoff, ...]] = {}
        self._held_off: dict[str, dict[int, tuple[Blocker, ...]]] = {}

    def put(self, copy: LiveCopy, now: datetime) -> list[Transition] | None:
        """Keep `copy` in place of the last one, and say how its alerts changed since (for the
        live stream); None (kept nothing) for a device that is not one of these (one this
        instance owns, or that the site no longer names)."""
        device = copy.device
        if copy.station is not None and device in self.site.stations:
            self.stations[device] = copy.station
        elif copy.garage is not None and device in self.site.garages:
            self.garages[device] = copy.garage
        else:
            return None
        before = {k: a for k, a in self.alerts.items() if device_of(k[1]) == device}
        for key in before:
            del self.alerts[key]
        after: dict[tuple[str, str], Alert] = {
            a.key: a for a in copy.alerts if device_of(a.subject) == device
        }
        self.alerts.update(after)
        self._cutoffs[device] = copy.cutoffs
        self._held_off[device] = dict(copy.held_off)
        return alert_changes(before, after, now)

    def orphaned(self, devices: Iterable[str]) -> list[str]:
        """The owner of `devices` is gone (its Will said so): nobody watches them until it
        is back, so none is shown online (its next copy says again what it is). Those that
        were online, changed now."""
        changed = []
        for device in devices:
            live: StationLive | GarageLive | None = self.stations.get(device)
            if live is None:
                live = self.garages.get(device)
            if live is not None and live.online is not False:
                live.online = False
                changed.append(device)
        return changed

    def cutoffs(self) -> Iterable[Cutoff]:
        return (c for held in self._cutoffs.values() for c in held)

    def blockers(self, station: str, ports: Iterable[int]) -> dict[int, list[Blocker]]:
        """Why switching each port on would be refused, as the owner last copied it; a
        station shown offline (its owner gone too) is offline whatever the copy says. A port
        the copy says nothing of (a copy of an older version's): its unacknowledged alerts,
        from the copy's alerts and cut-offs (the rules that fire are the owner's to know)."""
        held = self._held_off.get(station, {})
        live = self.stations.get(station)
        gone = [offline(station)] if live is not None and live.online is False else []
        found = {}
        for port in ports:
            if port in held:
                said = [b for b in held[port] if b.hold is not Hold.OFFLINE]
                shown = gone or [b for b in held[port] if b.hold is Hold.OFFLINE]
            else:
                cut_by = {
                    c.alert_id for c in self._cutoffs.get(station, ()) if c.port in (port, None)
                }
                alerts = self.alerts.values()
                said, shown = unacknowledged(alerts, station, port, cut_by=cut_by), gone
            found[port] = [*said, *shown]
        return found


def alert_changes(
    before: Mapping[tuple[str, str], Alert], after: Mapping[tuple[str, str], Alert], now: datetime
) -> list[Transition]:
    """How a device's open alerts changed from one copy to the next, as its owner's
    transitions said it: cleared (shown cleared at `now`, when the copy came), then raised,
    acknowledged, escalated or updated."""
    cleared = [
        Transition(Change.CLEARED, replace(old, state=AlertState.CLEARED, cleared_at=now))
        for key, old in before.items()
        if key not in after or after[key].id != old.id
    ]
    found = []
    for key, alert in after.items():
        old = before.get(key)
        if old is None or old.id != alert.id:
            found.append(Transition(Change.RAISED, alert))
        elif alert == old:
            continue
        elif alert.acknowledged_by is not None and old.acknowledged_by is None:
            found.append(Transition(Change.ACKNOWLEDGED, alert))
        elif alert.severity is not old.severity:
            found.append(Transition(Change.ESCALATED, alert))
        else:
            found.append(Transition(Change.UPDATED, alert))
    return [*cleared, *found]
