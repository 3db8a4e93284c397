"""The broker's address (`mqtt://user:password@host:port`, `mqtts://…` over TLS, with the CA
that signed the broker's certificate) and the client id to connect with."""

import logging
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

from facilities.errors import OperatorError

log = logging.getLogger(__name__)

# The client id when the broker URL names no user (and no --client-id is given).
DEFAULT_CLIENT_ID = "facilities"
# The ports a URL without one means: MQTT's registered ports (1883; 8883 over TLS).
PORTS = {"mqtt": 1883, "mqtts": 8883}
EXPECTED = "expected mqtt://[user:password@]host[:port] or mqtts://… (TLS)"

# The password of a URL's user part (`//user:password@`), for error lines.
_PASSWORD = re.compile(r"(//[^/@:]*:)[^/@]*@")


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """`mqtt://user:password@host:port`, parsed; `tls` for `mqtts://`, whose certificate is
    checked against `ca_file` (PEM), or against the system's CAs when there is none."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None

    @classmethod
    def parse(cls, url: str | SecretStr, *, ca_file: str = "") -> "BrokerUrl":
        if isinstance(url, SecretStr):  # Settings.broker: it holds the password
            url = url.get_secret_value()
        parts = urlsplit(url)
        shown = _PASSWORD.sub(r"\1***@", url)  # an error line never carries the password
        if parts.scheme not in PORTS or not parts.hostname:
            raise OperatorError(f"broker URL {shown!r}: {EXPECTED}")
        try:
            port = parts.port or PORTS[parts.scheme]
        except ValueError:
            raise OperatorError(f"broker URL {shown!r}: bad port") from None
        tls = parts.scheme == "mqtts"
        if ca_file and not tls:
            log.warning("--broker-ca %s is not used: the broker URL is mqtt:// (no TLS)", ca_file)
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=(ca_file or None) if tls else None,
        )

    def display(self) -> str:
        """The URL without its password, for logs and error messages."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def session_client_id(url: BrokerUrl, requested: str = "") -> str:
    """The client id to connect with: the broker user's name unless another is asked for.
    The shipped mosquitto.conf (`use_username_as_clientid`) replaces any client id with the
    user name, so that a device's password cannot take the service's id: there, the session
    (and the queue kept for it) belongs to the user, whatever is asked for."""
    user = url.username or ""
    if requested and user and requested != user:
        log.warning(
            "client id %s: a broker with the shipped mosquitto.conf uses the user name %s "
            "as client id instead (one session per broker user)",
            requested,
            user,
        )
    return requested or user or DEFAULT_CLIENT_ID
