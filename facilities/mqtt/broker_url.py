"""The broker's address (`mqtt://user:password@host:port`) and the client id to connect with."""

import logging
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

from facilities.errors import OperatorError

log = logging.getLogger(__name__)

# The client id when the broker URL names no user (and no --client-id is given).
DEFAULT_CLIENT_ID = "facilities"

# The password of a URL's user part (`//user:password@`), for error lines.
_PASSWORD = re.compile(r"(//[^/@:]*:)[^/@]*@")


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """`mqtt://user:password@host:port`, parsed."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str | SecretStr) -> "BrokerUrl":
        if isinstance(url, SecretStr):  # Settings.broker: it holds the password
            url = url.get_secret_value()
        parts = urlsplit(url)
        shown = _PASSWORD.sub(r"\1***@", url)  # an error line never carries the password
        if parts.scheme != "mqtt" or not parts.hostname:
            raise OperatorError(
                f"broker URL {shown!r}: expected mqtt://[user:password@]host[:port]"
            )
        try:
            port = parts.port or 1883
        except ValueError:
            raise OperatorError(f"broker URL {shown!r}: bad port") from None
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def display(self) -> str:
        """The URL without its password, for logs and error messages."""
        user = f"{self.username}@" if self.username else ""
        return f"mqtt://{user}{self.host}:{self.port}"


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
