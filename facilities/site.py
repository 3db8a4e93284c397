"""Site file (TOML) → frozen Site, with errors that name their line."""

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from facilities.errors import SiteError
from facilities.site_lines import LineIndex
from facilities.site_refs import SERVICE_USER as SERVICE_USER  # re-exported: broker_config
from facilities.site_refs import Loc, Problem, Ref, references
from facilities.thresholds import Thresholds

ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
_ID_RE = re.compile(ID_PATTERN)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


EntryT = TypeVar("EntryT", bound=_Entry)


class CommunityEntry(_Entry):
    id: str = Field(pattern=ID_PATTERN, description="community id")
    name: str = Field(min_length=1, description="name in Chinese")
    name_en: str = Field(min_length=1, description="name in English")
    bridged: bool = Field(
        False,
        description="its devices connect to a broker of the community's own, bridged to the "
        "central one (docs/bridge.md)",
    )


class GateEntry(_Entry):
    id: str = Field(description="gate id, the `{gate}` of its MQTT topics")
    name: str | None = Field(None, min_length=1, description="name in Chinese (default: the id)")
    name_en: str | None = Field(None, min_length=1, description="name in English (default: the id)")


def _gate_table(value: Any) -> Any:
    """A gate given as its id alone (`"north"`, the first form of the site file) is the
    table of that id without names."""
    return {"id": value} if isinstance(value, str) else value


GateItem = Annotated[GateEntry, BeforeValidator(_gate_table)]


class GarageEntry(_Entry):
    id: str = Field(pattern=ID_PATTERN, description="garage id, also its controller's MQTT user")
    community: str = Field(description="id of the community the garage belongs to")
    name: str | None = Field(None, description="name in Chinese (default: the community's)")
    name_en: str | None = Field(None, description="name in English")
    capacity: int = Field(ge=0, description="bays")
    gates: list[GateItem] = Field(
        default_factory=list,
        description='gate ids (`"north"`), or tables with names (`{id, name, name_en}`)',
    )
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
    bridged: bool = False  # its devices are on a broker of its own (docs/bridge.md)


@dataclass(frozen=True, slots=True)
class GateName:
    """A gate's names for people: Chinese and English (the id when the site gives none)."""

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
    gate_names: tuple[GateName, ...] = ()  # in the order of `gates`

    def gate_name(self, gate: str) -> GateName:
        """The names of one of its gates (its id, for a gate the site names not)."""
        return next((g for g in self.gate_names if g.id == gate), GateName(gate, gate, gate))


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
    """Validate site-file text; raise SiteError listing every problem with its line: the
    shape of each entry and the references between them (ids, communities, garages) in one
    pass, so that one run of `check-site` shows them all."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SiteError(source, [f"TOML syntax: {exc}"]) from None
    index = LineIndex(text)
    problems: list[tuple[int, str]] = []

    def problem(loc: tuple[str | int, ...], message: str) -> None:
        line = index.line_of(loc) or 0
        where = ".".join(str(part) for part in loc if isinstance(part, str))
        problems.append((line, f"line {line}: {where}: {message}" if where else message))

    parsed, refs = _shapes(raw, problem)
    references(refs, problem)
    site = _cross_check(parsed, problem)
    if not any(refs.values()):
        problem((), "the site is empty: no [[community]], [[garage]] or [[station]]")
    if problems:
        raise SiteError(source, [text for _, text in sorted(problems)])
    return replace(site, source=source)


_ENTRIES: dict[str, type[_Entry]] = {
    "community": CommunityEntry,
    "garage": GarageEntry,
    "station": StationEntry,
}


def _text(table: Mapping[str, Any], key: str) -> str | None:
    value = table.get(key)
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class _Valid:
    """The valid entries, each with its place among its kind's tables in the file."""

    rules: dict[str, Any]
    entries: dict[str, list[tuple[int, Any]]]

    def of(self, kind: str, model: type[EntryT]) -> list[tuple[int, EntryT]]:
        return [(i, entry) for i, entry in self.entries[kind] if isinstance(entry, model)]


def _shapes(raw: dict[str, Any], problem: Problem) -> tuple[_Valid, dict[str, list[Ref]]]:
    """Each entry validated on its own: the valid ones, and what every entry names (read
    even from an invalid one, so that its references are checked in the same run)."""
    lists = {kind: raw.get(kind, []) for kind in _ENTRIES}
    valid: dict[str, list[tuple[int, Any]]] = {kind: [] for kind in _ENTRIES}
    refs: dict[str, list[Ref]] = {kind: [] for kind in _ENTRIES}
    for kind, model in _ENTRIES.items():
        if not isinstance(lists[kind], list):
            problem((kind,), f"expected [[{kind}]] tables")
            continue
        for i, table in enumerate(lists[kind]):
            loc = (kind, i)
            if not isinstance(table, dict):
                problem(loc, f"expected a [[{kind}]] table")
                continue
            refs[kind].append(
                Ref(loc, _text(table, "id"), _text(table, "community"), _text(table, "garage"))
            )
            try:
                valid[kind].append((i, model.model_validate(table)))
            except ValidationError as exc:
                _report(exc, loc, problem)
    rest = {key: value for key, value in raw.items() if key not in _ENTRIES}
    try:
        rules = SiteFile.model_validate(rest).rules
    except ValidationError as exc:  # an unknown top-level key, [rules] not a table
        _report(exc, (), problem)
        rules = {}
    return _Valid(rules, valid), refs


def _report(exc: ValidationError, loc: Loc, problem: Problem) -> None:
    for error in exc.errors():
        where = (*loc, *error["loc"])
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        if error["type"] == "model_type" and "gates" in where:
            message = "a gate is an id or a table { id, name, name_en }"
        if error["type"] == "missing":
            message = f"required key {where[-1]!s} is missing"
            where = where[:-1]
        problem(where, message)


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


def _cross_check(parsed: _Valid, problem: Problem) -> Site:
    check = _CrossCheck(_thresholds(Thresholds(), parsed.rules, ("rules",), problem), problem)
    for _, c in parsed.of("community", CommunityEntry):
        check.communities.setdefault(c.id, Community(c.id, c.name, c.name_en, c.bridged))
    for i, g in parsed.of("garage", GarageEntry):
        check.garages[g.id] = check.garage(g, ("garage", i))
    stations = {
        s.id: check.station(s, ("station", i)) for i, s in parsed.of("station", StationEntry)
    }
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
    """What one valid entry is checked against (its references are checked apart, on every
    entry: `site_refs.references`): the communities and garages before it and the site's thresholds;
    every problem goes to `problem`."""

    def __init__(self, thresholds: Thresholds, problem: Problem) -> None:
        self.thresholds = thresholds
        self.problem = problem
        self.communities: dict[str, Community] = {}
        self.garages: dict[str, Garage] = {}

    def garage(self, g: GarageEntry, loc: Loc) -> Garage:
        problem = self.problem
        community = self.communities.get(g.community)
        gates = tuple(gate.id for gate in g.gates)
        for gate in gates:
            if not _ID_RE.match(gate):
                problem((*loc, "gates"), f"gate id {gate!r} does not match {ID_PATTERN}")
        if len(set(gates)) != len(gates):
            problem((*loc, "gates"), "duplicate gate id")
        return Garage(
            id=g.id,
            community=g.community,
            name=g.name or (community.name if community else g.id),
            name_en=g.name_en or (community.name_en if community else g.id),
            capacity=g.capacity,
            gates=gates,
            thresholds=_thresholds(self.thresholds, g.rules, (*loc, "rules"), problem),
            gate_names=tuple(
                GateName(gate.id, gate.name or gate.id, gate.name_en or gate.id) for gate in g.gates
            ),
        )

    def station(self, s: StationEntry, loc: Loc) -> Station:
        problem = self.problem
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
