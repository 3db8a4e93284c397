"""`facilities demo`: one demo per database (a second is refused with one line); the demo's
tokens are replaced at each start, not piled up."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _demo_argv(db: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "facilities",
        "demo",
        "--db",
        str(db),
        "--listen",
        "127.0.0.1:0",
        *extra,
    ]


def _environment() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACILITIES_")}
    return {**clean, "PYTHONUNBUFFERED": "1"}


def _demo(db: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _demo_argv(db, *extra),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env=_environment(),
    )


def _people(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT role, name FROM people ORDER BY role"))


@pytest.mark.slow
def test_a_second_demo_on_the_same_database_is_refused_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    log = tmp_path / "first.out"
    with log.open("w") as out:
        first = subprocess.Popen(
            _demo_argv(db, "--run-for", "60"),
            stdout=out,
            stderr=subprocess.DEVNULL,
            env=_environment(),
        )
    try:
        deadline = time.monotonic() + 30
        while "devices simulated" not in log.read_text():
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

        second = _demo(db, "--run-for", "5")
        assert second.returncode == 1
        assert second.stderr.splitlines() == [
            f"facilities: another demo is running on {db} (pid {first.pid}): stop it, or give"
            " this one a database of its own (--db PATH)"
        ]
        assert second.stdout == ""
        assert first.poll() is None  # the first goes on, its broker untouched
        stored = log.read_text().count("stored ")
        time.sleep(6)  # the first's progress line comes every 5 s
        assert log.read_text().count("stored ") > stored
    finally:
        first.send_signal(signal.SIGINT)
        code = first.wait(30)
    assert code == 0

    other = _demo(tmp_path / "other.db", "--run-for", "3")  # a database of its own: runs
    assert other.returncode == 0, other.stderr[-2000:]


@pytest.mark.slow
def test_the_demo_tokens_do_not_pile_up(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    tokens = []
    for _ in range(2):
        done = _demo(db, "--run-for", "2")
        assert done.returncode == 0, done.stderr[-2000:]
        tokens.append([line.split()[2] for line in done.stdout.splitlines() if " token " in line])
        assert _people(db) == [("resident", "demo resident"), ("staff", "demo staff")]
    assert len(tokens[0]) == len(tokens[1]) == 2
    assert not set(tokens[0]) & set(tokens[1])
