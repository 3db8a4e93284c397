"""A broker URL the service cannot use is a usage error (exit 2), before any file is made."""

from pathlib import Path

import pytest

from tests.support.processes import run_cli

# each test starts the `facilities` process (tests/support/split.py)
pytestmark = pytest.mark.slow

SITE = Path(__file__).resolve().parent.parent / "site.example.toml"

EXPECTED = "expected mqtt://[user:password@]host[:port] or mqtts://… (TLS)"


@pytest.mark.parametrize(
    ("url", "line"),
    [
        ("http://127.0.0.1:1883", f"broker URL 'http://127.0.0.1:1883': {EXPECTED}"),
        ("mqtt://", f"broker URL 'mqtt://': {EXPECTED}"),
        ("mqtt://127.0.0.1:99999", "broker URL 'mqtt://127.0.0.1:99999': bad port"),
        ("mqtt://127.0.0.1:port", "broker URL 'mqtt://127.0.0.1:port': bad port"),
        # the password is never printed
        ("tcp://facilities:s3cret@h", f"broker URL 'tcp://facilities:***@h': {EXPECTED}"),
    ],
)
def test_run_refuses_a_bad_broker_url_before_making_any_file(
    tmp_path: Path, url: str, line: str
) -> None:
    # the database's default (./var/facilities.db) is under the working directory
    done = run_cli("run", "--site", str(SITE), "--broker", url, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"facilities: {line}"]
    assert list(tmp_path.iterdir()) == []


def test_the_variable_is_refused_like_the_flag(tmp_path: Path) -> None:
    done = run_cli(
        "run",
        "--site",
        str(SITE),
        cwd=tmp_path,
        variables={"FACILITIES_BROKER": "ws://broker.example"},
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"facilities: broker URL 'ws://broker.example': {EXPECTED}"]
    assert list(tmp_path.iterdir()) == []


def test_simulate_refuses_it_too(tmp_path: Path) -> None:
    done = run_cli("simulate", "--site", str(SITE), "--broker", "http://h", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"facilities: broker URL 'http://h': {EXPECTED}"]
