"""The saved live state kept for what is still in the site file (docs/operations.md)."""

# Alert subjects, stations and their ports, garages and their gates ("Removing a device").

from collections.abc import Mapping

from facilities.charging import live as charging
from facilities.garage import state as garage
from facilities.site import Site


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


def fitted_stations(
    site: Site, saved: Mapping[str, charging.StationLive]
) -> dict[str, charging.StationLive]:
    """Every station of the site: its saved state (without ports past its count), else new."""
    stations = {s.id: charging.StationLive.new(s.id, s.ports) for s in site.stations.values()}
    for station_id, live in saved.items():
        if station_id in site.stations:
            ports = site.stations[station_id].ports
            live.ports = {n: p for n, p in live.ports.items() if 1 <= n <= ports}
            stations[station_id] = live
    return stations


def fitted_garages(
    site: Site, saved: Mapping[str, garage.GarageLive]
) -> dict[str, garage.GarageLive]:
    """Every garage of the site: its saved state (without gates it no longer has), else new."""
    garages = {g.id: garage.GarageLive.new(g.id, g.gates) for g in site.garages.values()}
    for garage_id, live in saved.items():
        if garage_id in site.garages:
            gates = site.garages[garage_id].gates
            live.gates = {g: v for g, v in live.gates.items() if g in gates}
            garages[garage_id] = live
    return garages
