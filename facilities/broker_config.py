"""Mosquitto password file and ACL for every device of the site, and the broker config."""

import base64
import hashlib
import os
import re
import secrets
from importlib import resources
from pathlib import Path

from facilities.mqtt.topics import Topics
from facilities.site import Site

SERVICE_USER = "facilities"
# Mosquitto 2.0's own format (`mosquitto_passwd`): $7$ = PBKDF2-HMAC-SHA512, 101 iterations,
# 12-byte salt; checked against mosquitto_passwd output and the real broker in the tests.
_PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A password-file hash that Mosquitto 2.0 accepts."""
    salt = salt if salt is not None else os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    encoded = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"$7${_PBKDF2_ITERATIONS}${encoded[0]}${encoded[1]}"


def acl_text(site: Site, topics: Topics) -> str:
    """One block per user: devices write only under their own id and read their commands."""
    t = topics
    blocks = [
        "# Written by `facilities broker-config`. Regenerate after changing the site file.",
        "",
        f"user {SERVICE_USER}",
        f"topic read {t.prefix}/#",
        f"topic write {t.station('+', 'command')}",
        f"topic write {t.gate('+', '+', 'command')}",
        f"topic write {t.prefix}/service/#",
        f"topic write {t.prefix}/alerts/#",
    ]
    for station in site.stations:
        blocks += [
            "",
            f"user {station}",
            *(f"topic write {t.station(station, s)}" for s in ("telemetry", "event")),
            f"topic write {t.station(station, 'availability')}",
            f"topic write {t.station(station, 'command/ack')}",
            f"topic read {t.station(station, 'command')}",
        ]
    for garage in site.garages:
        blocks += [
            "",
            f"user {garage}",
            f"topic write {t.garage(garage, 'telemetry')}",
            f"topic write {t.garage(garage, 'availability')}",
            f"topic write {t.gate(garage, '+', 'event')}",
            f"topic write {t.gate(garage, '+', 'command/ack')}",
            f"topic read {t.gate(garage, '+', 'command')}",
        ]
    return "\n".join(blocks) + "\n"


def new_credentials(site: Site) -> dict[str, str]:
    """A fresh random password for the service and every station and garage controller."""
    users = [SERVICE_USER, *site.stations, *site.garages]
    return {user: secrets.token_urlsafe(18) for user in users}


def write_broker_config(
    site: Site,
    out: Path,
    *,
    topic_prefix: str = "facilities",
    credentials: dict[str, str] | None = None,
) -> dict[str, str]:
    """Write `passwd` and `acl` into `out` (mode 0600); return the credentials."""
    credentials = credentials if credentials is not None else new_credentials(site)
    out.mkdir(parents=True, exist_ok=True)
    passwd = "".join(f"{user}:{hash_password(pw)}\n" for user, pw in credentials.items())
    _write_private(out / "passwd", passwd)
    _write_private(out / "acl", acl_text(site, Topics(topic_prefix)))
    return credentials


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    path.chmod(0o600)


def shipped_mosquitto_conf() -> str:
    """The `mosquitto.conf` shipped with the project."""
    return resources.files("facilities").joinpath("mosquitto.conf").read_text("utf-8")


_REPLACED = re.compile(
    r"^(listener|password_file|acl_file|persistence_location|log_dest|user)\b.*$", re.M
)


def render_mosquitto_conf(*, port: int, config_dir: Path, data_dir: Path, user: str) -> str:
    """The shipped config for a private broker: loopback port, our files, our user."""
    body = _REPLACED.sub("", shipped_mosquitto_conf())
    return (
        f"{body}\n# --- private instance ---\n"
        f"listener {port} 127.0.0.1\n"
        f"password_file {config_dir / 'passwd'}\n"
        f"acl_file {config_dir / 'acl'}\n"
        f"persistence_location {data_dir}/\n"
        f"user {user}\n"
        "log_dest stderr\n"
    )
