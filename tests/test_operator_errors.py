"""An operator's mistake gets one line saying what and where, and the right exit code."""

import os
from pathlib import Path

import pytest

from facilities.mosquitto import PrivateBroker, free_port
from tests.support.paths import EXAMPLE_SITE
from tests.support.processes import run_cli


def _run(broker: str, db: Path, *extra: str) -> tuple[int, list[str]]:
    result = run_cli(
        "--log-level",
        "ERROR",
        "run",
        "--site",
        str(EXAMPLE_SITE),
        "--broker",
        broker,
        "--db",
        str(db),
        "--listen",
        f"127.0.0.1:{free_port()}",
        *extra,
    )
    return result.returncode, result.stderr.strip().splitlines()


@pytest.mark.slow
def test_bad_credentials_stop_at_once_with_one_line(broker: PrivateBroker, tmp_path: Path) -> None:
    code, lines = _run(
        f"mqtt://facilities:wrong@127.0.0.1:{broker.port}",
        tmp_path / "f.db",
        "--connect-timeout",
        "20",
    )
    assert code == 1
    assert len(lines) == 1
    # Mosquitto answers a wrong password with "Not authorized" (3.1.1 return code 5)
    assert lines[0] == (
        f"facilities: broker mqtt://facilities@127.0.0.1:{broker.port} refused the credentials:"
        " Not authorized"
    )


@pytest.mark.slow
def test_an_unreachable_broker_is_retried_then_one_line(tmp_path: Path) -> None:
    port = free_port()
    code, lines = _run(f"mqtt://127.0.0.1:{port}", tmp_path / "f.db", "--connect-timeout", "1")
    assert code == 1
    assert lines == [f"facilities: cannot reach broker mqtt://127.0.0.1:{port}: Connection refused"]


@pytest.mark.slow
def test_an_unwritable_database_is_one_line(broker: PrivateBroker, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, lines = _run(broker.url(), blocker / "f.db")
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith(f"facilities: cannot open database {blocker / 'f.db'}")


@pytest.mark.slow
def test_a_taken_http_port_is_one_line(broker: PrivateBroker, tmp_path: Path) -> None:
    result = run_cli(
        "--log-level",
        "ERROR",
        "run",
        "--site",
        str(EXAMPLE_SITE),
        "--broker",
        broker.url(),
        "--db",
        str(tmp_path / "f.db"),
        "--listen",
        f"127.0.0.1:{broker.port}",
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"facilities: cannot listen on 127.0.0.1:{broker.port}: Address already in use"
    )


@pytest.mark.slow
def test_a_bad_site_file_is_exit_2(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[[community]]\nid = "cq4"\nname = "长桥四村"\n', encoding="utf-8")
    result = run_cli("run", "--site", str(site), "--broker", "mqtt://127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.strip() == f"{site}: line 1: community: required key name_en is missing"


@pytest.mark.slow
def test_options_read_the_environment(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "FACILITIES_SITE": str(tmp_path / "missing.toml")}
    result = subprocess.run(
        [sys.executable, "-m", "facilities", "run"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=30,
    )
    assert result.returncode == 2
    assert "missing.toml: cannot read" in result.stderr


def test_broker_config_writes_files_and_prints_credentials_once(tmp_path: Path) -> None:
    result = run_cli("broker-config", "--site", str(EXAMPLE_SITE), "--out", str(tmp_path))
    assert result.returncode == 0
    users = [line.split(" = ")[0] for line in result.stdout.splitlines() if " = " in line]
    assert users[0] == "facilities"
    assert len(users) == 1 + 20 + 5
    # the broker's group may read it when run as root (Mosquitto drops root before opening
    # it); nobody else, ever (tests/security/test_broker_config.py)
    assert (tmp_path / "passwd").stat().st_mode & 0o777 == (0o640 if os.geteuid() == 0 else 0o600)
    acl = (tmp_path / "acl").read_text()
    assert "user cs-07\ntopic write facilities/charging/cs-07/telemetry" in acl


@pytest.mark.slow
@pytest.mark.parametrize(
    "url", ["http://facilities:s3cret-pw@127.0.0.1:1883", "mqtt://facilities:s3cret-pw@h:port"]
)
def test_a_malformed_broker_url_is_one_line_without_its_password(url: str, tmp_path: Path) -> None:
    code, lines = _run(url, tmp_path / "f.db")
    assert code != 0
    assert len(lines) == 1, lines
    assert "s3cret-pw" not in lines[0]
    assert lines[0].startswith("facilities: broker URL '")
    assert "facilities:***@" in lines[0]  # what and where, without the secret
