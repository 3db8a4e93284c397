"""`facilities backup`: a consistent copy of the live database, by SQLite's online backup."""

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from facilities.errors import StoreError, UsageError
from facilities.store.db import BUSY_TIMEOUT_MS, PRIVATE_FILE
from facilities.store.sql import is_postgres, shown, sqlite_path


@dataclass(frozen=True, slots=True)
class Copied:
    path: Path
    schema_version: int
    size_bytes: int


def backup(target: str | Path, to: Path) -> Copied:
    """Copy `db` to `to` while the service may be writing it; the copy is one file (rollback
    journal, no WAL), mode 0600, checked with `integrity_check`, and replaces `to` only whole.
    SQLite only: PostgreSQL has its own tools (docs/postgresql.md, "Backup")."""
    if is_postgres(str(target)):
        raise UsageError(
            f"backup copies a SQLite file; {shown(str(target))} is PostgreSQL: use pg_dump"
            ' (docs/postgresql.md, "Backup")'
        )
    db = Path(sqlite_path(str(target)))
    if not db.is_file():
        raise StoreError(f"no database at {db}")
    if to.exists() and os.path.samefile(db, to):
        raise UsageError(f"{to} is the database itself: back up elsewhere")
    partial = to.with_name(f".{to.name}.partial")
    try:
        _private_empty(partial)
        version = _copy(db, partial)
        _sync(partial)
        os.replace(partial, to)
        _sync(to.parent)
    except OSError as exc:
        raise StoreError(f"cannot write backup {to}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return Copied(to, version, to.stat().st_size)


def _copy(db: Path, partial: Path) -> int:
    """The backup itself; returns the copy's schema version."""
    # Read-only: a backup never creates, migrates or changes the service's database.
    source = sqlite3.connect(
        f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000
    )
    target = sqlite3.connect(partial)
    try:
        # All pages in one step: one read transaction, so the copy is the database as of one
        # commit. In WAL mode the service's writers go on meanwhile; a copy made in several
        # steps would start over at each of their commits and, under steady ingest, might
        # never end.
        source.backup(target)
        # The copy is a file of its own: no -wal beside it to lose when it is moved.
        target.execute("PRAGMA journal_mode = DELETE")
        checked = target.execute("PRAGMA integrity_check").fetchall()
        version = int(target.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise StoreError(f"cannot back up {db}: {exc}") from None
    finally:
        target.close()
        source.close()
    if checked != [("ok",)]:
        first = "; ".join(str(row[0]) for row in checked[:3])
        raise StoreError(f"the backup of {db} failed its integrity check: {first}")
    return version


def _private_empty(path: Path) -> None:
    """`path` empty and the user's alone, whatever the umask: the copy holds what the
    database holds (docs/operations.md, "Database")."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def _sync(path: Path) -> None:
    """The file's data (or the directory's entry) on disk before the copy is called done."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
