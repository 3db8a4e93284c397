"""`facilities demo`: private broker, service and simulators from one command."""

import re
import socket
from pathlib import Path

import pytest

from tests.support.db import query
from tests.support.processes import run_cli


@pytest.mark.slow
def test_the_demo_runs_everything_and_counts_what_it_stores(tmp_path: Path) -> None:
    # the port the demo is told to use is taken: it must still come up (on a free port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = tmp_path / "demo.db"
        result = run_cli(
            "demo",
            "--run-for",
            "7",
            "--db",
            str(db),
            "--listen",
            f"127.0.0.1:{port}",
            timeout_s=60,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert re.search(r"^broker   mqtt://127\.0\.0\.1:\d+ ", out, re.M)
    assert re.search(r"^service  http://127\.0\.0\.1:\d+/healthz$", out, re.M)
    assert re.search(r"^api docs http://127\.0\.0\.1:\d+/docs$", out, re.M)
    assert re.search(r"^status   http://127\.0\.0\.1:\d+/  ", out, re.M)
    assert re.search(r"^staff token    [\w-]{43}  ", out, re.M)
    assert query(db, "SELECT role FROM people ORDER BY role") == [("resident",), ("staff",)]
    assert "25 devices simulated" in out
    counts = [int(n) for n in re.findall(r"^stored (\d+) messages", out, re.M)]
    assert counts
    assert counts == sorted(counts)
    assert counts[-1] > 0
    assert query(db, "SELECT count(DISTINCT station) FROM station_samples") == [(20,)]
    assert query(db, "SELECT count(*) FROM quarantine") == [(0,)]
