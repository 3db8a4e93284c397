"""What the entries of a site file name: device ids unique, communities and garages that exist."""

from collections.abc import Callable
from dataclasses import dataclass

# The service's broker user (`broker-config`): a device's id is its broker user and client id,
# so a device by this name would share the service's password, session and ACL.
SERVICE_USER = "facilities"
# Where in the file: a location such as ("station", 3, "ports").
Loc = tuple[str | int, ...]
# Reports one problem: where, what.
Problem = Callable[[Loc, str], None]


@dataclass(frozen=True, slots=True)
class Ref:
    """What an entry names, read from the file even when the entry is invalid otherwise."""

    loc: Loc
    id: str | None
    community: str | None
    garage: str | None


def references(refs: dict[str, list[Ref]], problem: Problem) -> None:
    """Ids unique, and every community and garage named exists (valid or not otherwise)."""
    communities: set[str] = set()
    for ref in refs["community"]:
        if ref.id is not None and ref.id in communities:
            problem((*ref.loc, "id"), f"duplicate community id {ref.id!r}")
        communities.add(ref.id or "")
    garages = {ref.id: ref for ref in refs["garage"] if ref.id is not None}
    devices: set[str] = set()
    for ref in (*refs["garage"], *refs["station"]):
        if ref.community is not None and ref.community not in communities:
            problem((*ref.loc, "community"), f"no community with id {ref.community!r}")
        if ref.id is not None:
            _device_id(ref.id, ref.loc, devices, problem)
        if ref.loc[0] != "station" or ref.garage is None:
            continue
        garage = garages.get(ref.garage)
        if garage is None:
            problem((*ref.loc, "garage"), f"no garage with id {ref.garage!r}")
        elif garage.community != ref.community:
            problem((*ref.loc, "garage"), f"garage {ref.garage!r} is in another community")


def _device_id(device: str, loc: Loc, taken: set[str], problem: Problem) -> None:
    """A device id is unique among garages and stations, and not the service's user."""
    if device in taken:
        problem((*loc, "id"), f"duplicate device id {device!r}")
    if device == SERVICE_USER:
        problem((*loc, "id"), f"{device!r} is the service's broker user")
    taken.add(device)
