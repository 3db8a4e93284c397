"""The subjects of a station's rules (`cs-07`, `cs-07/3`) and the cut-offs they ask for."""

import functools

from facilities.verdicts import Action, ActionKind


@functools.cache  # named by the rules for every port near a limit, on each message
def port_subject(station: str, port: int) -> str:
    """A port's subject: `cs-07/3`."""
    return f"{station}/{port}"


@functools.cache
def port_off(station: str, port: int) -> tuple[Action, ...]:
    """Power this port off."""
    return (Action(ActionKind.POWER_OFF_PORT, station, port=port),)


@functools.cache
def station_off(station: str) -> tuple[Action, ...]:
    """Power the whole station off."""
    return (Action(ActionKind.POWER_OFF_STATION, station),)
