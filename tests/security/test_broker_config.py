"""`facilities broker-config` on a live site: credentials kept, files the broker can read and
nobody else (docs/security.md), with the real command and the real broker."""

import grp
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from facilities.broker_config import read_passwd, render_mosquitto_conf
from facilities.mosquitto import accepts, find_mosquitto, free_port
from tests.support.paths import EXAMPLE_SITE
from tests.support.poll import wait_until
from tests.support.processes import run_cli

AS_ROOT = os.geteuid() == 0
STATIONS_BEFORE = ("cs-01", "cs-02", "cs-03")


def _site(path: Path, stations: tuple[str, ...]) -> Path:
    """A small site file: one community, one garage with a gate, `stations`."""
    lines = [
        "[[community]]",
        'id = "north"',
        'name = "North"',
        'name_en = "North"',
        "",
        "[[garage]]",
        'id = "g-n1"',
        'community = "north"',
        'name = "North garage"',
        'name_en = "North garage"',
        "capacity = 20",
        'gates = ["main"]',
    ]
    for station in stations:
        lines += [
            "",
            "[[station]]",
            f'id = "{station}"',
            'community = "north"',
            f'name = "{station}"',
            f'name_en = "{station}"',
            "ports = 2",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _config(site: Path, out: Path, *extra: str) -> tuple[dict[str, str], str]:
    """Run the real command; (the passwords it printed, its stderr)."""
    done = run_cli("broker-config", "--site", str(site), "--out", str(out), *extra)
    assert done.returncode == 0, done.stderr
    return tomllib.loads(done.stdout), done.stderr


def _new_file(out: Path) -> dict[str, str]:
    return tomllib.loads((out / "credentials.new").read_text())


class Broker:
    """Mosquitto from the shipped config over `out`'s files, started as `mosquitto` does on a
    server: as root, dropping privileges for `user` (itself when not root)."""

    def __init__(self, out: Path, user: str) -> None:
        self.port = free_port()
        data = out / "data"
        data.mkdir(exist_ok=True)
        if AS_ROOT:
            shutil.chown(data, user)
        self.conf = out / "mosquitto.conf"
        self.conf.write_text(
            render_mosquitto_conf(port=self.port, config_dir=out, data_dir=data, user=user)
        )
        self.log = out / "mosquitto.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [find_mosquitto(), "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(self._listening, timeout_s=10, what="the broker to listen", interval_s=0.02)

    def _listening(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def reload(self, user: str, password: str) -> None:
        """SIGHUP, as the documented steps say; wait until `user` gets in with `password`."""
        self.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: accepts(self.port, user, password),
            timeout_s=10,
            what=f"{user} to be let in after the reload",
            interval_s=0.02,
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def out() -> Iterator[Path]:
    """The broker's config directory, where the `mosquitto` user can reach it (pytest's own
    temporary directories are private to root)."""
    parent = Path(tempfile.mkdtemp(prefix="facilities-broker-config-"))
    parent.chmod(0o755)
    yield parent / "etc"
    shutil.rmtree(parent)


def test_a_second_run_keeps_adds_removes_and_rotates(out: Path, tmp_path: Path) -> None:
    first, _ = _config(_site(tmp_path / "a.toml", STATIONS_BEFORE), out)
    assert set(first) == {"facilities", "g-n1", *STATIONS_BEFORE}
    assert _new_file(out) == first
    hashes = read_passwd(out / "passwd")

    # cs-02 is decommissioned, cs-04 installed: nobody else is re-provisioned
    after = _site(tmp_path / "b.toml", ("cs-01", "cs-03", "cs-04"))
    second, stderr = _config(after, out)
    assert second == _new_file(out)
    assert set(second) == {"cs-04"}
    now = read_passwd(out / "passwd")
    assert set(now) == {"facilities", "g-n1", "cs-01", "cs-03", "cs-04"}
    assert {u: now[u] for u in ("facilities", "g-n1", "cs-01", "cs-03")} == {
        u: hashes[u] for u in ("facilities", "g-n1", "cs-01", "cs-03")
    }
    assert "removed: cs-02" in stderr
    assert "user cs-02" not in (out / "acl").read_text()

    # one device rotated (twice named: once), the others untouched
    third, stderr = _config(after, out, "--rotate", "cs-01", "--rotate", "cs-01")
    assert set(third) == {"cs-01"}
    rotated = read_passwd(out / "passwd")
    assert rotated["cs-01"] != now["cs-01"]
    assert {u: h for u, h in rotated.items() if u != "cs-01"} == {
        u: h for u, h in now.items() if u != "cs-01"
    }
    assert "rotated: cs-01" in stderr

    # nothing to do: nothing new, no passwords printed
    fourth, stderr = _config(after, out)
    assert fourth == {}
    assert read_passwd(out / "passwd") == rotated
    assert "no new passwords" in stderr


def test_rotating_an_unknown_id_is_refused_and_changes_nothing(out: Path, tmp_path: Path) -> None:
    site = _site(tmp_path / "a.toml", STATIONS_BEFORE)
    _config(site, out)
    before = (out / "passwd").read_bytes()
    done = run_cli("broker-config", "--site", str(site), "--out", str(out), "--rotate", "cs-99")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "facilities: --rotate cs-99: not the service nor a device of the site"
    ]
    assert (out / "passwd").read_bytes() == before


def test_the_files_are_never_world_readable(out: Path, tmp_path: Path) -> None:
    _config(_site(tmp_path / "a.toml", STATIONS_BEFORE), out)
    for name in ("passwd", "acl", "credentials.new"):
        mode = (out / name).stat().st_mode
        assert not mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IXOTH), name
        assert not mode & stat.S_IWGRP, name
    assert stat.S_IMODE((out / "credentials.new").stat().st_mode) == 0o600
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.skipif(not AS_ROOT, reason="starting Mosquitto as root needs root")
def test_mosquitto_started_as_root_reads_the_files_and_applies_changes(
    out: Path, tmp_path: Path
) -> None:
    """The documented steps: broker-config as root, then `mosquitto -c` as root with `user
    mosquitto`. Mosquitto opens the password file after dropping root; before, it said
    `Unable to open pwfile` and exited."""
    pytest.importorskip("pwd").getpwnam("mosquitto")
    site = _site(tmp_path / "a.toml", STATIONS_BEFORE)
    first, _ = _config(site, out)
    group = grp.getgrnam("mosquitto").gr_gid
    for name in ("passwd", "acl"):
        info = (out / name).stat()
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, group), name
    broker = Broker(out, "mosquitto")
    try:
        assert accepts(broker.port, "cs-01", first["cs-01"])
        assert not accepts(broker.port, "cs-01", "a guess")
        # a station added, one removed and one rotated on the live broker; then SIGHUP
        after = _site(tmp_path / "b.toml", ("cs-01", "cs-03", "cs-04"))
        second, _ = _config(after, out, "--rotate", "cs-03")
        broker.reload("cs-04", second["cs-04"])
        assert accepts(broker.port, "cs-01", first["cs-01"])  # kept: not re-provisioned
        assert accepts(broker.port, "cs-03", second["cs-03"])
        assert not accepts(broker.port, "cs-03", first["cs-03"])  # rotated
        assert not accepts(broker.port, "cs-02", first["cs-02"])  # removed
        assert accepts(broker.port, "facilities", first["facilities"])
    finally:
        broker.stop()
    assert "Unable to open" not in broker.log.read_text()


def test_the_example_site_makes_every_user(out: Path) -> None:
    made, _ = _config(EXAMPLE_SITE, out)
    assert set(made) == set(read_passwd(out / "passwd"))
    assert "facilities" in made


@pytest.mark.parametrize("kind", ["station", "garage"])
def test_a_device_cannot_be_named_as_the_service_user(out: Path, tmp_path: Path, kind: str) -> None:
    # Before: a station (or garage) with the id `facilities` matched the id pattern; its
    # broker user was the service's: one password line for both (handed to whoever installs
    # the device: it reads everything and commands every gate and port), one client id, and
    # the ACL blocks merged.
    site = _site(tmp_path / "site.toml", STATIONS_BEFORE)
    text = site.read_text().replace(
        'id = "cs-02"' if kind == "station" else 'id = "g-n1"', 'id = "facilities"'
    )
    site.write_text(text.replace('garage = "g-n1"', 'garage = "facilities"'))
    done = run_cli("broker-config", "--site", str(site), "--out", str(out))
    assert done.returncode != 0
    assert "facilities" in done.stderr and "service" in done.stderr, done.stderr
    assert not (out / "passwd").exists()
    checked = run_cli("check-site", str(site))
    assert checked.returncode != 0, checked.stdout
    assert "the service's broker user" in checked.stderr, checked.stderr


def test_a_broker_that_resets_the_connection_while_asked_has_not_let_the_user_in() -> None:
    """Asking whether a new user is let in (after a reload) is a poll: a broker that drops
    the connection mid-answer (seen under load, right after a SIGHUP) says "not yet", not an
    error that fails whatever was starting (two tests' set-ups failed so in CI)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def reset() -> None:
            peer, _ = server.accept()
            peer.recv(1024)
            # close with SO_LINGER 0: a reset instead of a CONNACK
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()

        answering = threading.Thread(target=reset)
        answering.start()
        try:
            assert accepts(port, "cs-01", "a password") is False
        finally:
            answering.join(5)
