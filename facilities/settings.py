"""Settings of `facilities run`, from flags or FACILITIES_* environment variables."""

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from facilities.errors import OperatorError, UsageError
from facilities.mqtt.topics import DEFAULT_PREFIX

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_DB = "./var/facilities.db"
DEFAULT_LISTEN = "127.0.0.1:8000"
DEFAULT_SITE = "site.example.toml"
# Empty: the broker URL's user name, the id the shipped mosquitto.conf gives the service anyway.
DEFAULT_CLIENT_ID = ""
# CLI.md: an unreachable broker is retried for up to 30 s at start.
DEFAULT_CONNECT_TIMEOUT_S = 30.0
# API.md (issue 4): gate opens per resident and failed authentications per client address.
DEFAULT_OPENS_PER_MINUTE = 5
DEFAULT_AUTH_FAILURES_PER_MINUTE = 10
# docs/operations.md, "Retention": what clients and devices make the service store is bounded.
# Bad messages kept per device and hour (past it, counted only): a device whose every
# telemetry (each 10 s) is bad fills 60 in 10 minutes, and 60 rows of at most ~1.6 KiB (a
# 1 KiB prefix, a 256-character topic, a 300-character detail) are ~100 KiB an hour.
# Quarantine is kept for a month (long enough to take a vendor through a firmware fault), the
# request audit for half a year (a resident's "who opened the gate in spring" is answered).
DEFAULT_QUARANTINE_PER_DEVICE_HOUR = 60
DEFAULT_QUARANTINE_RETENTION_DAYS = 30.0
DEFAULT_AUDIT_RETENTION_DAYS = 180.0
# A sticker's QR code holds the public address and a page's path; at error correction M a
# code holds at most ~2,300 bytes, and a short address keeps the code coarse and scannable.
PUBLIC_URL_MAX = 200
# docs/operations.md, "Connections". A client has this long to send a whole request: a phone
# on a poor mobile link sends a request head and a body of at most 16 KiB in well under
# 10 s. At most this many connections are open at once: far above the district's live pages
# and apps open together, and with room to spare under the default 1,024 descriptors
# (2 per connection + 256; the unit's LimitNOFILE gives more).
DEFAULT_CLIENT_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 500


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Listen":
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise OperatorError(f"--listen {text!r}: expected HOST:PORT")
        return cls(host.strip("[]") or "127.0.0.1", int(port))


@dataclass(frozen=True, slots=True)
class Settings:
    site: Path = Path(DEFAULT_SITE)
    broker: str = DEFAULT_BROKER
    db: Path = Path(DEFAULT_DB)
    listen: Listen = Listen("127.0.0.1", 8000)
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    client_id: str = DEFAULT_CLIENT_ID
    topic_prefix: str = DEFAULT_PREFIX
    opens_per_minute: int = DEFAULT_OPENS_PER_MINUTE
    auth_failures_per_minute: int = DEFAULT_AUTH_FAILURES_PER_MINUTE
    quarantine_per_device_hour: int = DEFAULT_QUARANTINE_PER_DEVICE_HOUR
    quarantine_retention_days: float = DEFAULT_QUARANTINE_RETENTION_DAYS
    audit_retention_days: float = DEFAULT_AUDIT_RETENTION_DAYS
    public_url: str = ""  # printed in QR codes; empty: the listen address (logged at start)
    trusted_proxies: tuple[str, ...] = ()  # believed for X-Forwarded-For; none by default
    client_timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS


def public_url(text: str) -> str:
    """`--public-url` checked: http(s)://host[:port][/path], no query; '' when not set."""
    if not text:
        return ""
    parts = urlsplit(text)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or len(text) > PUBLIC_URL_MAX
    ):
        raise UsageError(
            f"--public-url {text[:80]!r}: expected http(s)://host[:port][/path], at most"
            f" {PUBLIC_URL_MAX} characters, no query"
        )
    return text.rstrip("/")


def trusted_proxies(text: str) -> tuple[str, ...]:
    """`--trusted-proxy`: comma-separated addresses or networks (10.0.0.0/8); '' for none."""
    found = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            found.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise UsageError(
                f"--trusted-proxy {item[:80]!r}: expected an IP address or network"
            ) from None
    return tuple(found)
