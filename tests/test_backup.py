"""`facilities backup`: a consistent copy while the service writes; restore; upgrades."""

import os
import shutil
import socket
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from facilities.store.db import migrations
from tests.support.processes import run_cli

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "site.example.toml"
NEWEST = migrations()[-1].version
# Rows one writer's transaction adds: a copy holds whole transactions, so a multiple of it.
PER_COMMIT = 50


def _made(db: Path) -> str:
    """A database made as operators make it, with one staff member; their token."""
    done = run_cli("staff", "add", "--name", "陈", "--db", str(db))
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


def _user_version(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


class _Writer(threading.Thread):
    """Commits PER_COMMIT telemetry rows a transaction, as fast as it can, until stopped."""

    def __init__(self, db: Path) -> None:
        super().__init__(name="writer", daemon=True)
        self.db = db
        self.commits = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.db, isolation_level=None, timeout=5)
        try:
            while not self.stop.is_set():
                first = self.commits * PER_COMMIT
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT INTO station_samples (station, ts, seq, received_at, temp_c)"
                    " VALUES ('cs-probe', ?, ?, ?, 21.5)",
                    [(float(n), n, time.time()) for n in range(first, first + PER_COMMIT)],
                )
                conn.execute("COMMIT")
                self.commits += 1
        finally:
            conn.close()


def test_a_backup_taken_while_a_writer_commits_is_whole_and_consistent(tmp_path: Path) -> None:
    db = tmp_path / "facilities.db"
    _made(db)
    with sqlite3.connect(db) as conn:  # some weight, so the copy takes a while
        conn.executemany(
            "INSERT INTO station_samples (station, ts, seq, received_at, temp_c)"
            " VALUES ('cs-ballast', ?, ?, 0, 20.0)",
            [(float(n), n) for n in range(200_000)],
        )
    writer = _Writer(db)
    writer.start()
    try:
        while writer.commits < 20:
            time.sleep(0.01)
        before = writer.commits
        copy = tmp_path / "backups" / "copy.db"
        copy.parent.mkdir()
        done = run_cli("backup", str(copy), "--db", str(db))
        after = writer.commits
    finally:
        writer.stop.set()
        writer.join(10)
    assert done.returncode == 0, done.stderr
    assert after > before + 10  # the writer went on meanwhile, not blocked by the backup
    assert str(copy) in done.stdout

    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert sorted(p.name for p in copy.parent.iterdir()) == ["copy.db"]  # one file, no WAL
    with sqlite3.connect(f"file:{copy}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == NEWEST
        seqs = [
            row[0]
            for row in conn.execute(
                "SELECT seq FROM station_samples WHERE station = 'cs-probe' ORDER BY seq"
            )
        ]
        ballast = conn.execute(
            "SELECT count(*) FROM station_samples WHERE station = 'cs-ballast'"
        ).fetchone()[0]
        people = conn.execute("SELECT name FROM people").fetchall()
    # whole transactions, and all of them up to one: a prefix of what was committed
    assert seqs == list(range(len(seqs)))
    assert len(seqs) % PER_COMMIT == 0
    assert before * PER_COMMIT <= len(seqs) <= after * PER_COMMIT
    assert ballast == 200_000
    assert people == [("陈",)]


def test_the_documented_restore_brings_the_data_back(tmp_path: Path) -> None:
    """docs/operations.md, "Backup and restore": stop, set the old files aside, put the copy
    in place (mode 0600), start."""
    db = tmp_path / "state" / "facilities.db"
    token = _made(db)
    backups = tmp_path / "backups"
    backups.mkdir()
    assert run_cli("backup", str(backups / "f.db"), "--db", str(db)).returncode == 0
    assert run_cli("staff", "add", "--name", "after the backup", "--db", str(db)).returncode == 0

    aside = tmp_path / "state" / "before-restore"
    aside.mkdir()
    for old in db.parent.glob("facilities.db*"):
        old.rename(aside / old.name)
    shutil.copyfile(backups / "f.db", db)
    db.chmod(0o600)

    listed = run_cli("staff", "list", "--db", str(db))
    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t")[2] for line in listed.stdout.splitlines()] == ["陈"]
    assert token  # the restored database knows it (only its hash is stored)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # as the service sets


def test_a_backup_overwrites_an_older_one_at_once(tmp_path: Path) -> None:
    db = tmp_path / "facilities.db"
    _made(db)
    copy = tmp_path / "copy.db"
    copy.write_text("yesterday's")
    assert run_cli("backup", str(copy), "--db", str(db)).returncode == 0
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT count(*) FROM people").fetchone()[0] == 1
    assert [name for name in os.listdir(tmp_path) if name.startswith("copy")] == ["copy.db"]
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]


def test_a_backup_of_no_database_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "missing.db"
    done = run_cli("backup", str(tmp_path / "copy.db"), "--db", str(db))
    assert done.returncode == 1
    assert done.stderr.strip() == f"facilities: no database at {db}"
    assert list(tmp_path.iterdir()) == []


def test_a_backup_onto_the_database_itself_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "facilities.db"
    _made(db)
    done = run_cli("backup", str(db), "--db", str(db))
    assert done.returncode == 2
    assert done.stderr.strip() == f"facilities: {db} is the database itself: back up elsewhere"
    assert run_cli("staff", "list", "--db", str(db)).returncode == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_a_database_from_a_newer_version_is_refused_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "facilities.db"
    _made(db)
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {NEWEST + 1}")
    expected = (
        f"facilities: database {db} is from a newer version of facilities (schema version"
        f" {NEWEST + 1}; this version knows up to {NEWEST}): run the newer version, or restore"
        " a backup made by this one"
    )
    served = run_cli(
        "run",
        "--site",
        str(SITE),
        "--db",
        str(db),
        "--broker",
        f"mqtt://127.0.0.1:{_closed_port()}",
        "--connect-timeout",
        "0.5",
    )
    assert served.returncode == 1
    assert served.stderr.strip().splitlines() == [expected]
    listed = run_cli("staff", "list", "--db", str(db))
    assert (listed.returncode, listed.stderr.strip()) == (1, expected)
    assert _user_version(db) == NEWEST + 1  # untouched


def test_an_older_database_is_migrated_forward(tmp_path: Path) -> None:
    db = tmp_path / "facilities.db"
    older = [m for m in migrations() if m.version < NEWEST]
    with sqlite3.connect(db) as conn:
        for migration in older:
            conn.executescript(migration.sql)
        conn.execute(f"PRAGMA user_version = {older[-1].version}")
    db.chmod(0o600)
    assert run_cli("staff", "add", "--name", "王", "--db", str(db)).returncode == 0
    assert _user_version(db) == NEWEST
