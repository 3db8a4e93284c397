"""The database holds residents' names, client addresses and token hashes: its files are
the service's alone (0600), however the process's umask is set."""

import contextlib
import os
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from facilities.mosquitto import PrivateBroker
from tests.support.processes import ServiceProcess, run_cli

SUFFIXES = ("", "-wal", "-shm")


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """The usual default of a shell (022): what `facilities run` gets without systemd."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(db: Path) -> dict[str, int]:
    return {
        suffix: stat.S_IMODE(os.stat(f"{db}{suffix}").st_mode)
        for suffix in SUFFIXES
        if os.path.exists(f"{db}{suffix}")
    }


def _serve(broker: PrivateBroker, db: Path, tmp_path: Path) -> ServiceProcess:
    with umask(0o022):
        return ServiceProcess(
            broker, db, client_id=f"rest-{uuid.uuid4().hex[:6]}", log=tmp_path / "log"
        ).start()


@pytest.mark.slow
def test_a_new_database_and_its_wal_are_0600(broker: PrivateBroker, tmp_path: Path) -> None:
    db = tmp_path / "state" / "facilities.db"
    process = _serve(broker, db, tmp_path)
    try:
        # a write through the service: the WAL and its index exist while it runs
        assert httpx.get(f"http://127.0.0.1:{process.port}/api/stations").status_code == 200
        found = modes(db)
        # before: {"": 0o644, "-wal": 0o644, "-shm": 0o644}
        assert found == dict.fromkeys(SUFFIXES, 0o600), {k: oct(v) for k, v in found.items()}
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700  # the directory it made
    finally:
        process.terminate()


@pytest.mark.slow
def test_existing_database_files_readable_by_others_are_made_0600_at_start(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    db = tmp_path / "facilities.db"
    with umask(0o022):
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        assert modes(db) == dict.fromkeys(SUFFIXES, 0o644)
        process = _serve(broker, db, tmp_path)
    conn.close()
    try:
        found = modes(db)
        assert found == dict.fromkeys(SUFFIXES, 0o600), {k: oct(v) for k, v in found.items()}
        assert "(mode 0644): set to 0600" in process.log.read_text()
    finally:
        process.terminate()


def test_the_command_line_creates_the_database_0600(tmp_path: Path) -> None:
    db = tmp_path / "people.db"
    with umask(0o022):
        added = run_cli("staff", "add", "--db", str(db), "--name", "物业")
    assert added.returncode == 0, added.stderr
    found = modes(db)
    assert found and all(mode == 0o600 for mode in found.values()), found


def test_the_systemd_unit_keeps_the_state_directory_private() -> None:
    unit = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "facilities.service"
    service: dict[str, str] = {}
    section = ""
    for line in unit.read_text("utf-8").splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#") and section == "Service":
            key, _, value = line.partition("=")
            service[key] = value
    assert service["UMask"] == "0077"
    assert service["StateDirectory"] == "facilities"
    assert service["StateDirectoryMode"] == "0700"
    assert service["ReadWritePaths"] == service["WorkingDirectory"] == "/var/lib/facilities"
