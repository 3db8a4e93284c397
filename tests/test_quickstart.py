"""The quick starts of docs/protocol.md (a mosquitto_pub/mosquitto_sub session as station
`cs-01`) and docs/api.md (a curl session against the demo), run as written: the shell blocks
marked `<!-- tested: NAME -->`, joined into one script, in a scratch directory, with free
ports for the ones the docs name. What the docs say came out is checked in the output and in
the database the service wrote."""

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from facilities.mosquitto import free_port
from tests.support.paths import ROOT

DOCS = ROOT / "docs"
VENV_BIN = Path(sys.executable).parent
RUN_TIMEOUT_S = 180.0
# The ports the docs use, replaced by free ones: a test must not depend on them being free.
DOC_PORTS = ("18830", "8080")


def documented(page: Path, name: str) -> str:
    """Every ```sh block of `page` marked `<!-- tested: name -->`, in order, joined."""
    text = page.read_text(encoding="utf-8")
    blocks = re.findall(rf"<!-- tested: {re.escape(name)} -->\n```sh\n(.*?)```", text, re.S)
    assert blocks, f"{page.name} has no block marked {name}"
    return "\n".join(blocks)


def run_as_written(script: str, workdir: Path) -> str:
    """Run `script` with bash -e in `workdir` (the checkout's files the docs copy are there);
    return what it printed. Its background jobs are in its process group: all stopped after."""
    for name in DOC_PORTS:
        script = re.sub(rf"\b{name}\b", str(free_port()), script)
    for name in ("site.example.toml", "mosquitto.conf"):
        shutil.copy(ROOT / name, workdir / name)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(
        ["bash", "-e", "-c", script],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        out, _ = process.communicate()
        pytest.fail(f"the quick start did not finish in {RUN_TIMEOUT_S} s:\n{out}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # anything it left running
    assert process.returncode == 0, out
    return out


@pytest.mark.slow
def test_the_protocol_quick_start_runs_as_written(tmp_path: Path) -> None:
    out = run_as_written(documented(DOCS / "protocol.md", "protocol-quickstart"), tmp_path)
    assert '{"status":"ok","broker":"ok","database":"ok"}' in out
    assert '"state":"charging"' in out
    command = (tmp_path / "quick" / "command.json").read_text()
    assert '"action":"power_off","port":1,"reason":"port_over_temperature"' in command
    assert '"state":"disabled"' in out
    with sqlite3.connect(tmp_path / "quick" / "facilities.db") as db:
        commands = db.execute("SELECT action, port, outcome FROM commands").fetchall()
        alerts = db.execute("SELECT rule, subject, severity FROM alerts").fetchall()
    # the one cut the doc shows, acked by the doc's ack; nothing else was sent
    assert commands == [("power_off", 1, "acked")]
    # the hazard, and the planned stop's `offline` as the doc says (a warning, at once)
    assert sorted(alerts) == [
        ("offline", "cs-01", "warning"),
        ("port_over_temperature", "cs-01/1", "critical"),
    ]


@pytest.mark.slow
def test_the_api_quick_start_runs_as_written(tmp_path: Path) -> None:
    out = run_as_written(documented(DOCS / "api.md", "api-quickstart"), tmp_path)
    assert '"role":"staff"' in out
    assert '"rule":"port_overload","subject":"cs-01/1"' in out
    assert (
        '{"error":"conflict","detail":"acknowledge port_overload (cs-01/1) before powering'
        ' cs-01/1 on again"}' in out
    )
    assert '"state":"acknowledged"' in out
    assert re.search(r'\{"command_id":"[0-9a-f]+","status":"done"\}', out), out
    assert "event: " in out  # the live stream
