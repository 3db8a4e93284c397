"""`facilities demo`: private broker, service and simulators from one command."""

import fcntl
import os
import pty
import re
import socket
import struct
import subprocess
import sys
import termios
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


# A terminal as many people have it: 24 rows of 80 columns.
ROWS, COLUMNS = 24, 80


def _screen(output: str) -> list[str]:
    """The rows a terminal of COLUMNS columns shows for `output`, oldest first: a carriage
    return goes back to the line's start, `ESC [ K` erases what follows, and a long line takes
    as many rows as it needs."""
    lines = [""]
    for part in re.split(r"(\r\n|\n|\r\x1b\[K|\r)", output):
        if part in ("\n", "\r\n"):
            lines.append("")
        elif part in ("\r", "\r\x1b[K"):
            lines[-1] = ""  # the demo only ever rewrites a line whole
        else:
            lines[-1] += part
    rows = []
    for line in lines:
        rows += [line[i : i + COLUMNS] for i in range(0, max(len(line), 1), COLUMNS)]
    return rows


@pytest.mark.slow
def test_the_banner_stays_on_a_24_line_terminal(tmp_path: Path) -> None:
    """What the demo says, logs included, on a terminal of 24 × 80: after it has run a while
    (and stopped), every line of the banner is still on the screen."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FACILITIES_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "facilities",
            "demo",
            "--run-for",
            "16",
            "--db",
            str(tmp_path / "demo.db"),
            "--listen",
            "127.0.0.1:0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**environment, "TERM": "xterm", "COLUMNS": str(COLUMNS), "LINES": str(ROWS)},
    )
    os.close(terminal)
    output = b""
    try:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the demo and everything it started closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        assert process.wait(60) == 0, output.decode(errors="replace")[-2000:]
    text = output.decode()
    banner = text[
        text.index("broker   mqtt://") : text.index("Ctrl-C stops.") + len("Ctrl-C stops.")
    ]
    # on a terminal the progress line is rewritten in place, as often as it comes
    assert len(re.findall(r"\r\x1b\[Kstored \d+ messages", text)) >= 2
    shown = "\n".join(_screen(text)[-ROWS:])
    for line in banner.replace("\r\n", "\n").split("\n"):
        # a line longer than the screen is wrapped: each of its rows is on the screen
        for start in range(0, len(line), COLUMNS):
            assert line[start : start + COLUMNS] in shown, (line, shown)
