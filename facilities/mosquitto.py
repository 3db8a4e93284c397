"""A private Mosquitto on a free loopback port, from the shipped config (demo, tests, bench)."""

import getpass
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facilities.broker_config import (
    SERVICE_USER,
    hash_password,
    render_mosquitto_conf,
    service_acl,
    write_broker_config,
)
from facilities.errors import BrokerError
from facilities.mqtt.topics import Topics
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
    # A community's own broker (docs/bridge.md): its devices' users only, and `bridge`, the
    # rendered bridge section (mosquitto-bridge.conf) appended to the config.
    community: str | None = None
    bridge: str = ""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> "PrivateBroker":
        """Write the config (first time) and start the broker; wait until it accepts TCP."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.credentials:
            # a private broker: new passwords for everyone at each first start
            (self.workdir / "passwd").unlink(missing_ok=True)
            made = write_broker_config(self.site, self.workdir, community=self.community)
            self.credentials = made.made
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
            + self.bridge
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
        for user, lines in self.extra_users.items():
            self._append_user(user, lines)

    def _append_user(self, user: str, acl_lines: Sequence[str]) -> str:
        password = secrets.token_urlsafe(12)
        with (self.workdir / "passwd").open("a") as passwd, (self.workdir / "acl").open("a") as acl:
            passwd.write(f"{user}:{hash_password(password)}\n")
            acl.write(f"\nuser {user}\n" + "".join(f"{line}\n" for line in acl_lines))
        self.credentials[user] = password
        return password

    def add_user(self, user: str, acl_lines: Sequence[str]) -> None:
        """A new user with its own ACL, on the running broker. The broker takes a client's id
        from its user name (mosquitto.conf), so every connection that must not share a
        session or kick another one needs its own user: the tests' services and observers."""
        if user in self.credentials:
            raise BrokerError(f"broker user {user} exists already")
        password = self._append_user(user, acl_lines)
        if self.process is None or self.process.poll() is not None:
            return  # read at the next start
        # Mosquitto 2.0 reloads password_file and acl_file on SIGHUP (man mosquitto.conf),
        # after the network events in hand: wait until the new user is let in.
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not accepts(self.port, user, password):
            if time.monotonic() > deadline:
                raise BrokerError(f"mosquitto did not take the new user {user} in time")
            time.sleep(0.01)

    def service_url(self, user: str, topics: Topics | None = None) -> str:
        """The URL of a service user `user` (with the service's ACL for `topics`' prefix),
        made on first use. Each service (each test's) needs its own: its persistent session
        is keyed by the user."""
        if user not in self.credentials:
            self.add_user(user, service_acl(topics or Topics()))
        return self.url(user)

    def new_user_like(self, template: str) -> str:
        """A new user with the ACL of the extra user `template` (`observer-1a2b3c` reads
        like `observer`); its name. Connections that must coexist each need their own."""
        user = f"{template}-{secrets.token_hex(3)}"
        self.add_user(user, self.extra_users[template])
        return user

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = (self.workdir / "mosquitto.log").read_text(errors="replace")[-500:]
                raise BrokerError(f"mosquitto exited at start: {tail.strip()}")
            # Answered, not only listening: Mosquitto listens before it sets its signal
            # handlers, so a SIGHUP (add_user) in between ended it (seen under load, with a
            # second listener to set up). An unknown user is refused, which is an answer.
            try:
                probe = f"probe-{secrets.token_hex(3)}"
                if _connack(self.port, probe, "", timeout_s=0.5)[:1] == b"\x20":
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise BrokerError(f"mosquitto did not answer on port {self.port} in {START_TIMEOUT_S} s")

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
        """`mqtt://user:password@127.0.0.1:port` of an existing user."""
        return f"mqtt://{user}:{self.credentials[user]}@127.0.0.1:{self.port}"


def accepts(port: int, user: str, password: str) -> bool:
    """Whether the broker accepts `user` now: one MQTT 3.1.1 CONNECT with a clean session
    (MQTT 3.1.1 §3.1), then DISCONNECT. The client id is the user's, as the broker makes it:
    so never ask about a user whose session matters (connected, or a service's queue), which
    this clean session would replace."""
    try:
        connack = _connack(port, user, password, timeout_s=START_TIMEOUT_S)
    except (ConnectionResetError, BrokenPipeError):
        return False  # dropped while answering (a reload in hand): not let in, yet
    return _accepted(connack)


def _accepted(connack: bytes) -> bool:
    # CONNACK: 0x20, length 2, flags, return code (0: accepted)
    return connack[:1] == b"\x20" and connack[3:4] == b"\x00"


def _connack(port: int, user: str, password: str, *, timeout_s: float) -> bytes:
    """One MQTT 3.1.1 CONNECT as `user` with a clean session (client id: the user name); the
    CONNACK's four bytes (empty when the connection closed first). DISCONNECT if accepted."""

    def utf8(text: str) -> bytes:
        data = text.encode()
        return len(data).to_bytes(2, "big") + data

    # protocol "MQTT" level 4; flags: user name, password, clean session; keep-alive 10 s
    body = utf8("MQTT") + bytes([4, 0xC2, 0, 10]) + utf8(user) + utf8(user) + utf8(password)
    length, size = b"", len(body)
    while True:  # the remaining length, 7 bits a byte (§2.2.3)
        size, digit = divmod(size, 128)
        length += bytes([digit | (0x80 if size else 0)])
        if not size:
            break
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(b"\x10" + length + body)
        connack = b""
        while len(connack) < 4 and (chunk := sock.recv(4 - len(connack))):
            connack += chunk
        if _accepted(connack):
            sock.sendall(b"\xe0\x00")
        return connack
