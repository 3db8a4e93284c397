"""The settings of each command, declared once (facilities/options.py derives the rest)."""

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, model_validator

from facilities.broker_config import BROKER_GROUP
from facilities.errors import OperatorError, UsageError
from facilities.logs import LogFormat
from facilities.mqtt.broker_url import BrokerUrl
from facilities.mqtt.ingest_batch import DEFAULT_QUARANTINE_PER_DEVICE_HOUR
from facilities.mqtt.topics import DEFAULT_PREFIX
from facilities.options import (
    Option,
    Options,
    as_text,
    from_text,
    parse_log_format,
    parse_log_level,
    positive,
)
from facilities.partition import Partition

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_DB = "./var/facilities.db"
DEFAULT_LISTEN = "127.0.0.1:8000"
DEFAULT_SITE = "site.example.toml"
# Empty: the broker URL's user name, the id the shipped mosquitto.conf gives the service anyway.
DEFAULT_CLIENT_ID = ""
# docs/operations.md, "Running under systemd": an unreachable broker is retried for up to 30 s
# at start.
DEFAULT_CONNECT_TIMEOUT_S = 30.0
# docs/api.md: gate opens per resident and failed authentications per client address.
DEFAULT_OPENS_PER_MINUTE = 5
DEFAULT_AUTH_FAILURES_PER_MINUTE = 10
# docs/operations.md, "Retention": what clients and devices make the service store is bounded
# (bad messages kept per device and hour: DEFAULT_QUARANTINE_PER_DEVICE_HOUR, ingest's).
# Quarantine is kept for a month (long enough to take a vendor through a firmware fault), the
# request audit for half a year (a resident's "who opened the gate in spring" is answered).
DEFAULT_QUARANTINE_RETENTION_DAYS = 30.0
DEFAULT_AUDIT_RETENTION_DAYS = 180.0
# Raw telemetry (every message: 180 MB a day at the example district's load, docs/performance.md,
# "Database growth") for two weeks: an incident is looked into within days, to the second.
# Charts keep each port's 5-minute summaries (3.7 MB a day) for two years: a season against
# the year before. Device events (plugs, faults, gate passages with the credential used,
# online/offline) as long as the request audit: who came through a gate is kept as long as
# who asked to open it.
DEFAULT_TELEMETRY_RETENTION_DAYS = 14.0
DEFAULT_BUCKET_RETENTION_DAYS = 730.0
DEFAULT_EVENT_RETENTION_DAYS = DEFAULT_AUDIT_RETENTION_DAYS
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


def parse_public_url(text: str) -> str:
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


def parse_trusted_proxies(text: str) -> tuple[str, ...]:
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


def parse_cors_origins(text: str) -> tuple[str, ...]:
    """`--cors-origin`: comma-separated origins (`https://app.example.org`, `http://localhost:5173`):
    a scheme, a host and a port at most, as browsers send them in `Origin`; '' for none."""
    found = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        parts = urlsplit(item)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username
            or len(item) > PUBLIC_URL_MAX
        ):
            raise UsageError(
                f"--cors-origin {item[:80]!r}: expected an origin, scheme://host[:port] with"
                " no path"
            )
        found.append(item.lower())
    return tuple(found)


def check_broker_url(url: SecretStr) -> SecretStr:
    """`--broker` parsed as the link will parse it, so that a URL it cannot use is refused
    as bad usage (exit 2) before anything is opened or created; the password stays hidden."""
    try:
        BrokerUrl.parse(url)
    except OperatorError as exc:
        raise UsageError(str(exc)) from None
    return url


# Options more than one command has.
SitePath = Annotated[Path, Option("site")]
DbPath = Annotated[Path, Option("db")]
# The service's database: a SQLite file (a path or sqlite:///path), or PostgreSQL by URL
DbTarget = Annotated[
    str, Option("db"), BeforeValidator(lambda v: str(v) if isinstance(v, Path) else v)
]
DB_HELP = "SQLite file, or postgresql://user@host:port/name (docs/postgresql.md)"
TopicPrefix = Annotated[str, Option("topic-prefix")]
Address = Annotated[Listen, Option("listen"), from_text(Listen.parse)]
BrokerUrlText = Annotated[SecretStr, Option("broker"), AfterValidator(check_broker_url)]
Speed = Annotated[float, Option("speed")]
RunFor = Annotated[float, Option("run-for")]
Scenario = Annotated[str, Option("scenario")]
BrokerCa = Annotated[str, Option("broker-ca")]
BROKER_CA_HELP = (
    "CA certificate (PEM) that signed an mqtts:// broker's certificate; empty: the system's CAs"
)


class GlobalSettings(Options):
    """Options of every command, before or after its name."""

    log_level: Annotated[str, Option("log-level", parse_log_level)] = Field(
        "INFO", description="DEBUG, INFO, ..."
    )
    log_format: Annotated[LogFormat, Option("log-format", parse_log_format)] = Field(
        as_text(LogFormat.TEXT.value),
        description="text, or json: one object a line (time, level, logger, message,"
        " exception) for journald and Loki",
    )


class Settings(Options):
    """`facilities run`: the service."""

    site: SitePath = Field(as_text(DEFAULT_SITE), description="site file")
    # SecretStr: it holds the service's password; logs show BrokerUrl.display()
    broker: BrokerUrlText = Field(
        as_text(DEFAULT_BROKER),
        description="mqtt://user:password@host:port, or mqtts://… for TLS (port 8883 by default)",
    )
    broker_ca: BrokerCa = Field("", description=BROKER_CA_HELP)
    db: DbTarget = Field(DEFAULT_DB, description=DB_HELP)
    listen: Address = Field(as_text(DEFAULT_LISTEN), description="HTTP HOST:PORT")
    connect_timeout_s: Annotated[float, Option("connect-timeout")] = Field(
        DEFAULT_CONNECT_TIMEOUT_S, description="seconds to reach the broker"
    )
    client_id: Annotated[str, Option("client-id")] = Field(
        DEFAULT_CLIENT_ID,
        description="MQTT client id of the persistent session; empty: the broker user, which"
        " the shipped mosquitto.conf uses whatever is set",
    )
    topic_prefix: TopicPrefix = Field(DEFAULT_PREFIX, description="MQTT topic prefix")
    partition: Annotated[Partition | None, Option("partition"), from_text(Partition.parse)] = Field(
        as_text(""),
        description="K/N: own only the garages and stations whose id hashes to K of N"
        " (a standby for K waits while another instance owns it); empty: everything",
    )
    opens_per_minute: Annotated[int, Option("opens-per-minute")] = Field(
        DEFAULT_OPENS_PER_MINUTE, description="gate opens a resident may ask for in any minute"
    )
    public_url: Annotated[str, Option("public-url"), AfterValidator(parse_public_url)] = Field(
        "",
        description="address residents reach the service at, printed in QR codes"
        " (e.g. https://…); default: the listen address",
    )
    auth_failures_per_minute: Annotated[int, Option("auth-failures-per-minute")] = Field(
        DEFAULT_AUTH_FAILURES_PER_MINUTE,
        description="failed authentications from one address before 429, in any minute",
    )
    trusted_proxies: Annotated[
        tuple[str, ...], Option("trusted-proxy"), from_text(parse_trusted_proxies)
    ] = Field(
        as_text(""),
        description="addresses or networks of reverse proxies whose X-Forwarded-For is"
        " believed (comma-separated; none: the socket's peer is the client)",
    )
    cors_origins: Annotated[
        tuple[str, ...], Option("cors-origin", repeatable=True), from_text(parse_cors_origins)
    ] = Field(
        as_text(""),
        description="origins (scheme://host[:port]) of browser apps allowed to call the API"
        " (repeatable or comma-separated; none: CORS off)",
    )
    client_timeout_s: Annotated[float, Option("client-timeout")] = Field(
        DEFAULT_CLIENT_TIMEOUT_S,
        description="seconds a client has to send a whole request (the connection is closed after)",
    )
    max_connections: Annotated[int, Option("max-connections")] = Field(
        DEFAULT_MAX_CONNECTIONS,
        description="open HTTP and WebSocket connections; past it a request is answered 503",
    )
    quarantine_per_device_hour: Annotated[
        int, Option("quarantine-per-device-hour", positive(int))
    ] = Field(
        DEFAULT_QUARANTINE_PER_DEVICE_HOUR,
        gt=0,
        description="bad messages kept per device and hour; past it they are only counted",
    )
    quarantine_retention_days: Annotated[
        float, Option("quarantine-retention-days", positive(float))
    ] = Field(
        DEFAULT_QUARANTINE_RETENTION_DAYS,
        gt=0,
        allow_inf_nan=False,
        description="days quarantined messages and their counts are kept",
    )
    audit_retention_days: Annotated[float, Option("audit-retention-days", positive(float))] = Field(
        DEFAULT_AUDIT_RETENTION_DAYS,
        gt=0,
        allow_inf_nan=False,
        description="days the audit of API requests (gate opens, port power) is kept",
    )
    telemetry_retention_days: Annotated[
        float, Option("telemetry-retention-days", positive(float))
    ] = Field(
        DEFAULT_TELEMETRY_RETENTION_DAYS,
        gt=0,
        allow_inf_nan=False,
        description="days raw telemetry (every message) is kept; older port readings are"
        " summed up per 5 minutes for charts",
    )
    bucket_retention_days: Annotated[float, Option("bucket-retention-days", positive(float))] = (
        Field(
            DEFAULT_BUCKET_RETENTION_DAYS,
            gt=0,
            allow_inf_nan=False,
            description="days the 5-minute summaries of port telemetry (charts) are kept",
        )
    )
    event_retention_days: Annotated[float, Option("event-retention-days", positive(float))] = Field(
        DEFAULT_EVENT_RETENTION_DAYS,
        gt=0,
        allow_inf_nan=False,
        description="days device events (plugs, faults, gate passages, online/offline) are kept",
    )

    @model_validator(mode="after")
    def _connections_bounded(self) -> "Settings":
        if self.client_timeout_s <= 0 or self.max_connections < 1:
            raise UsageError("--client-timeout and --max-connections must be positive")
        return self


class DemoSettings(Options):
    """`facilities demo`: a private broker, the service and every device simulated."""

    site: SitePath = Field(as_text(DEFAULT_SITE), description="site file")
    listen: Address = Field(
        as_text(DEFAULT_LISTEN), description="HTTP HOST:PORT (port 0: any free port)"
    )
    speed: Speed = Field(as_text("60"), description="simulated time runs this many times faster")
    scenario: Scenario = Field("normal", description="normal, or a fault scenario (see simulate)")
    run_for_s: RunFor = Field(
        as_text("0"), description="stop after this many seconds (0: until Ctrl-C)"
    )
    db: DbPath = Field(as_text("./var/demo.db"), description="SQLite file of the demo")


class SimulateSettings(Options):
    """`facilities simulate`: the device simulators only."""

    site: SitePath = Field(as_text(DEFAULT_SITE), description="site file")
    broker: BrokerUrlText = Field(
        as_text(DEFAULT_BROKER),
        description="mqtt://host:port, or mqtts://… for TLS (user/password: see below)",
    )
    broker_ca: BrokerCa = Field("", description=BROKER_CA_HELP)
    credentials: Annotated[str, Option("credentials")] = Field(
        "", description="TOML file of device passwords from broker-config"
    )
    scenario: Scenario = Field(
        "normal",
        description="normal, or a fault 10 s in: overload, overheat, leakage, smoke, garage-smoke",
    )
    speed: Speed = Field(as_text("1"), description="simulated time runs this many times faster")
    run_for_s: RunFor = Field(
        as_text("0"), description="stop after this many seconds (0: until Ctrl-C)"
    )
    topic_prefix: TopicPrefix = Field(DEFAULT_PREFIX, description="MQTT topic prefix")


def _broker_group() -> str:
    return BROKER_GROUP if os.geteuid() == 0 else ""


class BrokerConfigSettings(Options):
    """`facilities broker-config`: its options (`--out` and `--rotate` are its arguments)."""

    site: SitePath = Field(as_text(DEFAULT_SITE), description="site file")
    topic_prefix: TopicPrefix = Field(DEFAULT_PREFIX, description="MQTT topic prefix")
    broker_group: Annotated[str, Option("broker-group")] = Field(
        default_factory=_broker_group,
        description="group that may read passwd and acl (mode 0640), the group Mosquitto"
        " drops root for; empty: owner only (0600), for a broker run as this user",
    )


class PeopleSettings(Options):
    """`facilities residents|staff revoke|list`, and `staff add`."""

    db: DbTarget = Field(DEFAULT_DB, description=f"the service's database: {DB_HELP}")


class ResidentAddSettings(PeopleSettings):
    """`facilities residents add`: garage ids are checked against the site file."""

    site: SitePath = Field(
        as_text(DEFAULT_SITE), description="site file (garage ids are checked against it)"
    )
