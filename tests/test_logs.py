"""Logs for journald and Loki: `--log-format json` (one object a line), `--log-level` anywhere."""

import json
import socket
import sys
from pathlib import Path

import pytest

from tests.support.processes import run_cli

# each test starts the `facilities` process (tests/support/split.py)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "site.example.toml"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_unreachable(tmp_path: Path, *options: str, before: tuple[str, ...] = ()) -> list[str]:
    """`facilities run` against a closed port: it migrates the database, logs, and exits 1."""
    done = run_cli(
        *before,
        "run",
        "--site",
        str(SITE),
        "--broker",
        f"mqtt://127.0.0.1:{_closed_port()}",
        "--db",
        str(tmp_path / "f.db"),
        "--connect-timeout",
        "0.5",
        *options,
    )
    assert done.returncode == 1, done.stderr
    return done.stderr.splitlines()


def test_log_level_after_the_command(tmp_path: Path) -> None:
    lines = _run_unreachable(tmp_path, "--log-level", "DEBUG")
    assert any(" DEBUG " in line for line in lines), lines
    assert lines[-1].startswith("facilities: cannot reach broker")


def test_log_level_after_the_command_wins_over_before(tmp_path: Path) -> None:
    lines = _run_unreachable(tmp_path, "--log-level", "ERROR", before=("--log-level", "DEBUG"))
    assert lines == [lines[-1]]
    assert lines[-1].startswith("facilities: cannot reach broker")


def test_log_level_before_the_command_still_holds(tmp_path: Path) -> None:
    lines = _run_unreachable(tmp_path, before=("--log-level", "ERROR"))
    assert len(lines) == 1


@pytest.mark.parametrize("where", ["before", "after"])
def test_json_logs_are_one_object_a_line(tmp_path: Path, where: str) -> None:
    flags = ("--log-format", "json", "--log-level", "DEBUG")
    lines = (
        _run_unreachable(tmp_path, before=flags)
        if where == "before"
        else _run_unreachable(tmp_path, *flags)
    )
    *logged, last = lines
    # the operator's line stays the one plain line it always is (docs/operations.md)
    assert last.startswith("facilities: cannot reach broker")
    events = [json.loads(line) for line in logged]
    assert events
    for event in events:
        assert set(event) >= {"time", "level", "logger", "message"}
        assert event["time"].endswith("Z") or event["time"].endswith("+00:00")
    migrated = [e for e in events if e["message"].startswith("applying migration 001_")]
    assert migrated and migrated[0]["level"] == "INFO"
    assert migrated[0]["logger"] == "facilities.store.db"
    assert any(e["level"] == "DEBUG" for e in events)


def test_json_logs_carry_the_exception_text() -> None:
    # the formatter alone, fed a record with an exception as logging makes it
    import logging

    from facilities.logs import JsonFormatter

    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.getLogger("facilities.x").makeRecord(
            "facilities.x", logging.ERROR, __file__, 1, "failed %s", ("it",), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    event = json.loads(line)
    assert event["message"] == "failed it"
    assert event["level"] == "ERROR"
    assert "ValueError: boom\nsecond line" in event["exception"]
    assert event["exception"].startswith("Traceback")


def test_an_unknown_log_format_is_refused() -> None:
    done = run_cli("check-site", str(SITE), "--log-format", "xml")
    assert done.returncode == 2
    assert "--log-format" in done.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    "argv",
    [
        ["check-site", str(SITE), "--log-level", "DEBUG"],
        ["schemas", "--log-level", "DEBUG", "--out", "{tmp}"],
        ["residents", "list", "--log-level", "DEBUG", "--db", "{tmp}/f.db"],
        ["staff", "add", "--name", "x", "--log-format", "json", "--db", "{tmp}/f.db"],
    ],
)
def test_every_command_takes_the_log_options(argv: list[str], tmp_path: Path) -> None:
    done = run_cli(*(arg.replace("{tmp}", str(tmp_path)) for arg in argv))
    assert done.returncode == 0, done.stderr
