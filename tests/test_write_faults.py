"""Which database errors a writer waits out, and what it says meanwhile: real SQLite errors
(a lock another connection holds, a read-only file), on a movable clock."""

import logging
import sqlite3
from pathlib import Path

import pytest

from facilities.write_faults import RETRY_MAX_S, Fault, WriteFaults, database_fault, fault_of
from tests.support.clock import MovableClock


def _error(db: Path, *, read_only: bool) -> sqlite3.Error:
    """The error SQLite raises for a write: with another connection holding the write lock,
    or through a read-only connection."""
    setup = sqlite3.connect(db, isolation_level=None)
    setup.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    setup.execute("BEGIN IMMEDIATE")
    uri = f"file:{db}?mode={'ro' if read_only else 'rw'}"
    writer = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=0)
    try:
        writer.execute("INSERT INTO t VALUES (1)")
    except sqlite3.Error as exc:
        return exc
    finally:
        writer.close()
        setup.execute("ROLLBACK")
        setup.close()
    raise AssertionError("the write went through")


def test_a_lock_is_waited_out_and_a_failing_database_is_said_to_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    locked = _error(tmp_path / "a.db", read_only=False)
    read_only = _error(tmp_path / "b.db", read_only=True)
    assert database_fault(locked) and database_fault(read_only)
    assert not database_fault(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not database_fault(OverflowError("int too large"))
    assert (fault_of(locked), fault_of(read_only)) == (Fault.LOCKED, Fault.FAILED)

    clock = MovableClock(frozen=True)
    faults = WriteFaults("ingest writer", monotonic=clock.monotonic)
    assert faults.reason() is None
    caplog.set_level(logging.WARNING, "facilities.write_faults")
    waits = [faults.failed(locked, "a batch")[1] for _ in range(8)]
    assert waits == sorted(waits) and waits[-1] == RETRY_MAX_S
    clock.advance(7)
    assert faults.reason() == "database locked (ingest writer retrying for 7 s)"
    assert len(caplog.records) == 1  # once, not at every try
    assert caplog.records[0].levelno == logging.WARNING

    faults.failed(read_only, "a batch")
    reason = faults.reason()
    assert reason is not None and reason.startswith("database failing (ingest writer stopped")
    assert "readonly" in reason
    assert caplog.records[-1].levelno == logging.ERROR

    faults.succeeded()
    assert faults.reason() is None
    assert "writes to the database again after 7.0 s (9 failed tries)" in caplog.text
