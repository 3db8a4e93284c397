"""Site file: the shipped district loads; every error names its line."""

import subprocess
import sys
from pathlib import Path

import pytest

from facilities.errors import SiteError
from facilities.site import GateName, parse_site
from tests.support.paths import EXAMPLE_SITE

GOOD = """\
[[community]]
id = "cq4"
name = "长桥四村"
name_en = "Changqiao No.4 Village"

[[garage]]
id = "g-cq4"
community = "cq4"
capacity = 120
gates = ["north", "south"]

[[station]]
id = "cs-01"
community = "cq4"
garage = "g-cq4"
ports = 10
port_max_w = 1000
station_max_w = 7000
"""


def test_the_shipped_site_is_the_changqiao_district(site) -> None:
    assert len(site.stations) == 20
    assert set(site.garages) == {"g-cq4", "g-cq8", "g-hc3", "g-hc4", "g-hc5"}
    garage_communities = {site.communities[g.community].name for g in site.garages.values()}
    assert garage_communities == {"长桥四村", "长桥八村", "惠城三村", "惠城四村", "惠城五村"}
    assert all(s.ports == 10 for s in site.stations.values())
    in_garages = [s for s in site.stations.values() if s.garage]
    assert 0 < len(in_garages) < 20
    assert all(site.garages[s.garage].community == s.community for s in in_garages if s.garage)
    assert all(c.name and c.name_en for c in site.communities.values())


def test_gates_are_ids_or_tables_with_their_names() -> None:
    """`gates = ["north"]` (ids alone, the first form) still loads, the names then the id;
    a table gives a gate its names for the pages; both forms may be mixed."""
    plain = parse_site(GOOD).garages["g-cq4"]
    assert plain.gates == ("north", "south")
    assert plain.gate_name("north") == GateName("north", "north", "north")
    named = parse_site(
        GOOD.replace(
            'gates = ["north", "south"]',
            'gates = ["north", { id = "south", name = "南门", name_en = "South gate" }]',
        )
    ).garages["g-cq4"]
    assert named.gates == ("north", "south")
    assert named.gate_names == (
        GateName("north", "north", "north"),
        GateName("south", "南门", "South gate"),
    )
    assert parse_site(GOOD.replace('"south"]', '{ id = "south", name = "南门" }]')).garages[
        "g-cq4"
    ].gate_name("south") == GateName("south", "南门", "south")


@pytest.mark.parametrize(
    ("gates", "expected"),
    [
        ('[{ id = "south", nom = "x" }]', "line 10: garage.gates.nom: unknown key"),
        ('[{ name = "南门" }]', "line 10: garage.gates: required key id is missing"),
        ('[{ id = "South" }]', "line 10: garage.gates: gate id 'South' does not match"),
        ('["south", { id = "south" }]', "line 10: garage.gates: duplicate gate id"),
        ('[{ id = "south", name = "" }]', "line 10: garage.gates.name: String should have"),
        ("[3]", "line 10: garage.gates: a gate is an id or a table { id, name, name_en }"),
    ],
)
def test_a_bad_gate_names_its_line(gates: str, expected: str) -> None:
    problems = _errors(GOOD.replace('["north", "south"]', gates))
    assert any(p.startswith(expected) for p in problems), problems


def test_defaults_and_overrides_of_thresholds() -> None:
    text = GOOD + "\n[station.rules]\nport_temp_max_c = 55\n\n[rules]\nleakage_max_ma = 25\n"
    site = parse_site(text)
    station = site.stations["cs-01"]
    assert station.thresholds.port_temp_max_c == 55  # per station
    assert station.thresholds.leakage_max_ma == 25  # from [rules]
    assert site.garages["g-cq4"].thresholds.leakage_max_ma == 25
    assert station.thresholds.charge_complete_s == 7200  # docs/rules.md's default (120 min)


def _errors(text: str) -> list[str]:
    with pytest.raises(SiteError) as caught:
        parse_site(text)
    return caught.value.problems


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("ports = 10", "ports = 10\nport = 3"), "line 17: station.port: unknown key"),
        (
            ('community = "cq4"\ngarage', 'community = "zz"\ngarage'),
            "line 14: station.community: no community with id 'zz'",
        ),
        (('id = "g-cq4"', 'id = "cs-01"'), "line 13: station.id: duplicate device id 'cs-01'"),
        (("capacity = 120\n", ""), "line 6: garage: required key capacity is missing"),
        (
            ("ports = 10", 'ports = "ten"'),
            "line 16: station.ports: Input should be a valid integer",
        ),
        (('id = "cs-01"', 'id = "CS 01"'), "line 13: station.id: String should match pattern"),
        (("gates = [", 'gates = ["North", '), "line 10: garage.gates: gate id 'North'"),
    ],
)
def test_each_error_names_its_line(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in GOOD
    problems = _errors(GOOD.replace(old, new, 1))
    assert any(p.startswith(expected) for p in problems), problems


def test_unknown_threshold_names_its_line() -> None:
    problems = _errors(GOOD + "\n[station.rules]\nport_temp_max = 55\n")
    assert problems == ["line 21: station.rules.port_temp_max: unknown rule threshold"]


def test_toml_syntax_error_names_its_line() -> None:
    problems = _errors(GOOD.replace("ports = 10", "ports = = 10"))
    assert "line 16" in problems[0]


def test_every_error_is_reported_at_once() -> None:
    text = GOOD.replace("capacity = 120", "capacity = -1").replace("ports = 10", "ports = 0")
    problems = _errors(text)
    assert [p.split(":")[0] for p in problems] == ["line 9", "line 16"]


def test_cross_references_are_checked_with_the_shapes() -> None:
    """A wrong shape and a wrong reference, in one run (the garage's capacity does not hide
    the station's unknown community)."""
    text = GOOD.replace('community = "cq4"\ngarage', 'community = "zz"\ngarage').replace(
        "capacity = 120", "capacity = -1"
    )
    assert _errors(text) == [
        "line 9: garage.capacity: Input should be greater than or equal to 0",
        "line 14: station.community: no community with id 'zz'",
        "line 15: station.garage: garage 'g-cq4' is in another community",
    ]


def test_check_site_command(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "facilities", "check-site", str(EXAMPLE_SITE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0
    assert "20 stations" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("ports = 10", "ports = 10\nport = 3"), encoding="utf-8")
    refused = subprocess.run(
        [sys.executable, "-m", "facilities", "check-site", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"{bad}: line 17: station.port: unknown key"


def test_every_threshold_is_documented() -> None:
    from facilities.thresholds import Thresholds
    from tests.support.paths import ROOT

    doc = (ROOT / "docs" / "site.md").read_text(encoding="utf-8")
    missing = [name for name in Thresholds.model_fields if f"| `{name}` |" not in doc]
    assert not missing
