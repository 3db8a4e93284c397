"""A private Mosquitto on a free loopback port, from the shipped config (demo, tests, bench)."""

import getpass
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from facilities.broker_config import (
    SERVICE_USER,
    hash_password,
    render_mosquitto_conf,
    write_broker_config,
)
from facilities.errors import BrokerError
from facilities.site import Site

START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise BrokerError("mosquitto not found: `make demo` or `apt-get install mosquitto`")
    return found


@dataclass
class PrivateBroker:
    """One Mosquitto process with its own config, passwords, ACL and persistence dir."""

    workdir: Path
    site: Site
    port: int = 0
    credentials: dict[str, str] = field(default_factory=dict)
    # Users beyond the site's devices, each with its ACL lines (tests: an observer that reads
    # everything, a rogue client that writes anywhere under the prefix).
    extra_users: dict[str, tuple[str, ...]] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> "PrivateBroker":
        """Write the config (first time) and start the broker; wait until it accepts TCP."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.credentials:
            self.credentials = write_broker_config(self.site, self.workdir)
            self._add_extra_users()
        if not self.port:
            self.port = free_port()
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            render_mosquitto_conf(
                port=self.port, config_dir=self.workdir, data_dir=data, user=getpass.getuser()
            )
        )
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            [find_mosquitto(), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: Ctrl-C in the demo's terminal reaches the whole foreground
            # process group; the broker must outlive the service's clean stop, and is
            # stopped last, by `stop()`.
            start_new_session=True,
        )
        log.close()
        self._wait_ready()
        return self

    def _add_extra_users(self) -> None:
        with (self.workdir / "passwd").open("a") as passwd, (self.workdir / "acl").open("a") as acl:
            for user, lines in self.extra_users.items():
                password = secrets.token_urlsafe(12)
                self.credentials[user] = password
                passwd.write(f"{user}:{hash_password(password)}\n")
                acl.write(f"\nuser {user}\n" + "".join(f"{line}\n" for line in lines))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = (self.workdir / "mosquitto.log").read_text(errors="replace")[-500:]
                raise BrokerError(f"mosquitto exited at start: {tail.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise BrokerError(f"mosquitto did not listen on port {self.port} in {START_TIMEOUT_S} s")

    def stop(self) -> None:
        """Stop cleanly (SIGTERM): Mosquitto saves its persistence file."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def url(self, user: str = SERVICE_USER) -> str:
        return f"mqtt://{user}:{self.credentials[user]}@127.0.0.1:{self.port}"
