"""`facilities check-site`: every problem of a site file in one run; an empty one refused."""

from pathlib import Path

import pytest

from facilities.errors import SiteError
from facilities.site import parse_site
from tests.support.processes import run_cli

COMMUNITY = """\
[[community]]
id = "cq4"
name = "长桥四村"
name_en = "Changqiao No.4 Village"
"""

GARAGE = """\
[[garage]]
id = "g-cq4"
community = "cq4"
capacity = 120
gates = ["north"]
"""

# line numbers in the comments: what check-site must name
MANY_PROBLEMS = """\
[[community]]
id = "cq4"
name = "长桥四村"
name_en = "Changqiao No.4 Village"

[[community]]
id = "cq4"
name = "又一个"
name_en = "Again"

[[garage]]
id = "g-cq4"
community = "cq4"
capacity = "many"
gates = ["north"]

[[station]]
id = "cs-01"
community = "nowhere"
garage = "g-cq4"
ports = 10

[[station]]
id = "cs-02"
community = "cq4"
ports = 0
colour = "red"

[[station]]
id = "cs-02"
community = "cq4"
ports = 4
"""


def test_schema_and_reference_errors_in_one_run(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(MANY_PROBLEMS, encoding="utf-8")
    done = run_cli("check-site", str(site))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"{site}: line 7: community.id: duplicate community id 'cq4'",
        f"{site}: line 14: garage.capacity: Input should be a valid integer",
        f"{site}: line 19: station.community: no community with id 'nowhere'",
        f"{site}: line 20: station.garage: garage 'g-cq4' is in another community",
        f"{site}: line 26: station.ports: Input should be greater than or equal to 1",
        f"{site}: line 27: station.colour: unknown key",
        f"{site}: line 30: station.id: duplicate device id 'cs-02'",
    ]


def test_an_invalid_garage_is_still_one_its_stations_may_name() -> None:
    text = (
        COMMUNITY
        + GARAGE.replace("capacity = 120", "capacity = -5")
        + '\n[[station]]\nid = "cs-01"\ncommunity = "cq4"\ngarage = "g-cq4"\nports = 2\n'
    )
    with pytest.raises(SiteError) as caught:
        parse_site(text)
    assert caught.value.problems == [
        "line 8: garage.capacity: Input should be greater than or equal to 0"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n  \n",
        "# the district, to be filled in\n",
        "[rules]\nclear_after_s = 60\n",
    ],
    ids=["empty", "blank", "comments", "rules only"],
)
def test_an_empty_site_is_an_error(tmp_path: Path, text: str) -> None:
    site = tmp_path / "site.toml"
    site.write_text(text, encoding="utf-8")
    done = run_cli("check-site", str(site))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{site}: the site is empty: no [[community]], [[garage]] or [[station]]"
    ]


def test_a_site_with_a_community_and_a_garage_is_enough(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(COMMUNITY + "\n" + GARAGE, encoding="utf-8")
    done = run_cli("check-site", str(site))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{site}: ok (1 communities, 1 garages, 0 stations)\n"


def test_entries_not_tables_are_named(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('station = "cs-01"\n\n' + COMMUNITY + "\n" + GARAGE, encoding="utf-8")
    done = run_cli("check-site", str(site))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"{site}: line 1: station: expected [[station]] tables"]
