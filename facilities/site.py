"""Site file (TOML) → frozen Site, with errors that name their line."""

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from facilities.errors import SiteError
from facilities.thresholds import Thresholds

ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
# The service's broker user (`broker-config`): a device's id is its broker user and client id,
# so a device by this name would share the service's password, session and ACL.
SERVICE_USER = "facilities"
# Where in the file: a location such as ("station", 3, "ports").
Loc = tuple[str | int, ...]
# Reports one problem: where, what.
Problem = Callable[[Loc, str], None]
_ID_RE = re.compile(ID_PATTERN)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class CommunityEntry(_Entry):
    id: str = Field(pattern=ID_PATTERN, description="community id")
    name: str = Field(min_length=1, description="name in Chinese")
    name_en: str = Field(min_length=1, description="name in English")


class GarageEntry(_Entry):
    id: str = Field(pattern=ID_PATTERN, description="garage id, also its controller's MQTT user")
    community: str = Field(description="id of the community the garage belongs to")
    name: str | None = Field(None, description="name in Chinese (default: the community's)")
    name_en: str | None = Field(None, description="name in English")
    capacity: int = Field(ge=0, description="bays")
    gates: list[str] = Field(default_factory=list, description="gate ids")
    rules: dict[str, Any] = Field(default_factory=dict, description="threshold overrides")


class StationEntry(_Entry):
    id: str = Field(pattern=ID_PATTERN, description="station id, also its MQTT user")
    community: str = Field(description="id of the community the station belongs to")
    garage: str | None = Field(None, description="the garage the station stands in, if any")
    name: str | None = Field(None, description="name in Chinese")
    name_en: str | None = Field(None, description="name in English")
    ports: int = Field(ge=1, le=64, description="number of ports, numbered from 1")
    port_max_w: float = Field(1000.0, gt=0, description="rated power of one port")
    station_max_w: float = Field(7000.0, gt=0, description="rated power of the supply")
    rules: dict[str, Any] = Field(default_factory=dict, description="threshold overrides")


class SiteFile(_Entry):
    community: list[CommunityEntry] = Field(default_factory=list)
    garage: list[GarageEntry] = Field(default_factory=list)
    station: list[StationEntry] = Field(default_factory=list)
    rules: dict[str, Any] = Field(default_factory=dict, description="site-wide thresholds")


@dataclass(frozen=True, slots=True)
class Community:
    id: str
    name: str
    name_en: str


@dataclass(frozen=True, slots=True)
class Garage:
    id: str
    community: str
    name: str
    name_en: str
    capacity: int
    gates: tuple[str, ...]
    thresholds: Thresholds
    stations: tuple[str, ...] = ()  # the charging stations that stand inside


@dataclass(frozen=True, slots=True)
class Station:
    id: str
    community: str
    garage: str | None
    name: str
    name_en: str
    ports: int
    port_max_w: float
    station_max_w: float
    thresholds: Thresholds


@dataclass(frozen=True, slots=True)
class Site:
    """What is installed where; every lookup the service needs is a dict."""

    communities: Mapping[str, Community]
    garages: Mapping[str, Garage]
    stations: Mapping[str, Station]
    thresholds: Thresholds
    source: str = field(default="<memory>")

    def has_gate(self, garage: str, gate: str) -> bool:
        found = self.garages.get(garage)
        return found is not None and gate in found.gates


class _LineIndex:
    """Maps a location such as ('station', 3, 'ports') to the line that defines it."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")
    _KEY = re.compile(r'^\s*("?)([A-Za-z0-9_-]+)\1\s*=')

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str | int, ...], int] = {}
        counts: dict[str, int] = {}
        table: tuple[str | int, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                table = self._table(header.group(1), header.group(2).split("."), counts, table)
                self.lines.setdefault(table, number)
                continue
            key = self._KEY.match(line)
            if key:
                self.lines.setdefault((*table, key.group(2)), number)

    @staticmethod
    def _table(
        bracket: str, parts: list[str], counts: dict[str, int], current: tuple[str | int, ...]
    ) -> tuple[str | int, ...]:
        if bracket == "[[" and len(parts) == 1:
            index = counts.get(parts[0], -1) + 1
            counts[parts[0]] = index
            return (parts[0], index)
        if len(parts) == 2 and parts[0] in counts and current[:1] == (parts[0],):
            return (*current[:2], parts[1])
        return tuple(parts)

    def line_of(self, loc: tuple[str | int, ...]) -> int | None:
        for end in range(len(loc), 0, -1):
            found = self.lines.get(loc[:end])
            if found is not None:
                return found
        return None


def load_site(path: str | Path) -> Site:
    """Read and validate a site file; raise SiteError listing every problem with its line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise SiteError(str(path), ["not UTF-8 text"]) from None
    return parse_site(text, source=str(path))


def parse_site(text: str, *, source: str = "<memory>") -> Site:
    """Validate site-file text; raise SiteError listing every problem with its line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SiteError(source, [f"TOML syntax: {exc}"]) from None
    index = _LineIndex(text)
    problems: list[tuple[int, str]] = []

    def problem(loc: tuple[str | int, ...], message: str) -> None:
        line = index.line_of(loc) or 0
        where = ".".join(str(part) for part in loc if isinstance(part, str))
        problems.append((line, f"line {line}: {where}: {message}" if where else message))

    try:
        parsed = SiteFile.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            if error["type"] == "missing":
                message = f"required key {loc[-1]!s} is missing"
                loc = loc[:-1]
            problem(loc, message)
        raise SiteError(source, [text for _, text in sorted(problems)]) from None

    site = _cross_check(parsed, problem)
    if problems:
        raise SiteError(source, [text for _, text in sorted(problems)])
    return replace(site, source=source)


def _thresholds(
    base: Thresholds,
    overrides: dict[str, Any],
    loc: tuple[str | int, ...],
    problem: Problem,
) -> Thresholds:
    try:
        return base.merged(overrides)
    except ValidationError as exc:
        for error in exc.errors():
            key = error["loc"][0] if error["loc"] else ""
            text = "unknown rule threshold" if error["type"] == "extra_forbidden" else error["msg"]
            problem((*loc, str(key)), text)
        return base


def _cross_check(parsed: SiteFile, problem: Problem) -> Site:
    check = _CrossCheck(_thresholds(Thresholds(), parsed.rules, ("rules",), problem), problem)
    for i, c in enumerate(parsed.community):
        if c.id in check.communities:
            problem(("community", i, "id"), f"duplicate community id {c.id!r}")
        check.communities[c.id] = Community(id=c.id, name=c.name, name_en=c.name_en)
    for i, g in enumerate(parsed.garage):
        check.garages[g.id] = check.garage(g, ("garage", i))
    stations = {s.id: check.station(s, ("station", i)) for i, s in enumerate(parsed.station)}
    garages = {
        garage_id: replace(
            garage, stations=tuple(s.id for s in stations.values() if s.garage == garage_id)
        )
        for garage_id, garage in check.garages.items()
    }
    return Site(
        communities=check.communities,
        garages=garages,
        stations=stations,
        thresholds=check.thresholds,
    )


class _CrossCheck:
    """What one entry is checked against: the communities and garages before it, the device
    ids taken, the site's thresholds; every problem goes to `problem`."""

    def __init__(self, thresholds: Thresholds, problem: Problem) -> None:
        self.thresholds = thresholds
        self.problem = problem
        self.communities: dict[str, Community] = {}
        self.garages: dict[str, Garage] = {}
        self._device_ids: set[str] = set()

    def device_id(self, device: str, loc: Loc) -> None:
        """A device id is unique among garages and stations, and not the service's user."""
        if device in self._device_ids:
            self.problem((*loc, "id"), f"duplicate device id {device!r}")
        if device == SERVICE_USER:
            self.problem((*loc, "id"), f"{device!r} is the service's broker user")
        self._device_ids.add(device)

    def garage(self, g: GarageEntry, loc: Loc) -> Garage:
        problem = self.problem
        community = self.communities.get(g.community)
        if community is None:
            problem((*loc, "community"), f"no community with id {g.community!r}")
        self.device_id(g.id, loc)
        for gate in g.gates:
            if not _ID_RE.match(gate):
                problem((*loc, "gates"), f"gate id {gate!r} does not match {ID_PATTERN}")
        if len(set(g.gates)) != len(g.gates):
            problem((*loc, "gates"), "duplicate gate id")
        return Garage(
            id=g.id,
            community=g.community,
            name=g.name or (community.name if community else g.id),
            name_en=g.name_en or (community.name_en if community else g.id),
            capacity=g.capacity,
            gates=tuple(g.gates),
            thresholds=_thresholds(self.thresholds, g.rules, (*loc, "rules"), problem),
        )

    def station(self, s: StationEntry, loc: Loc) -> Station:
        problem = self.problem
        if s.community not in self.communities:
            problem((*loc, "community"), f"no community with id {s.community!r}")
        if s.garage is not None:
            garage = self.garages.get(s.garage)
            if garage is None:
                problem((*loc, "garage"), f"no garage with id {s.garage!r}")
            elif garage.community != s.community:
                problem((*loc, "garage"), f"garage {s.garage!r} is in another community")
        self.device_id(s.id, loc)
        if s.port_max_w > s.station_max_w:
            problem((*loc, "port_max_w"), "port_max_w exceeds station_max_w")
        return Station(
            id=s.id,
            community=s.community,
            garage=s.garage,
            name=s.name or s.id,
            name_en=s.name_en or s.id,
            ports=s.ports,
            port_max_w=s.port_max_w,
            station_max_w=s.station_max_w,
            thresholds=_thresholds(self.thresholds, s.rules, (*loc, "rules"), problem),
        )
