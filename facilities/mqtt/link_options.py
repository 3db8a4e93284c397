"""What the broker link asks of the broker and how it retries: session, timeouts, backoff."""

import random
import ssl

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from facilities.errors import OperatorError
from facilities.mqtt.broker_url import BrokerUrl

# CONNACK reason codes that retrying will not fix (MQTT 5 §3.2.2.2; paho maps the 3.1.1
# return codes 4 and 5 onto 134 and 135).
AUTH_FAILURES = frozenset({134, 135})
KEEPALIVE_S = 30
CONNACK_TIMEOUT_S = 10.0
# Reconnect backoff: full jitter over an exponential range capped at 30 s, so a broker that
# restarts is not met by every client of the district at the same instant.
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
# MQTT 5 session expiry: the broker keeps our session (and queues for us) for a week of
# outage, as `persistent_client_expiration` in mosquitto.conf does for MQTT 3.1.1 clients.
SESSION_EXPIRY_S = 7 * 24 * 3600
# MQTT 5 Receive Maximum: QoS 1 messages the broker may send before we acknowledge; the
# same window as `max_inflight_messages` in mosquitto.conf (why 2,000 is explained there).
RECEIVE_MAXIMUM = 2000


def connect_properties() -> Properties:
    """The CONNECT properties: our session kept a week, the window of unacked messages."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    return properties


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before reconnect `attempt` (0-based): full jitter, capped."""
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


def tls_context(url: BrokerUrl) -> ssl.SSLContext | None:
    """For `mqtts://`: TLS that checks the broker's certificate, and that it names the URL's
    host, against `url.ca_file` (PEM), else against the system's CAs. None for `mqtt://`."""
    if not url.tls:
        return None
    try:
        return ssl.create_default_context(cafile=url.ca_file)
    except OSError as exc:  # ssl.SSLError too: a file that holds no certificate
        raise OperatorError(
            f"--broker-ca {url.ca_file}: cannot read a CA certificate from it: "
            f"{exc.strerror or exc}"
        ) from None


def untrusted(url: BrokerUrl, exc: ssl.SSLCertVerificationError) -> str:
    """One line for a broker whose certificate we do not trust: what is wrong, what to do."""
    what = exc.verify_message or exc.reason or str(exc)
    against = f"--broker-ca {url.ca_file}" if url.ca_file else "the system's CAs (no --broker-ca)"
    return (
        f"broker {url.display()}: its TLS certificate is not trusted ({what}), checked"
        f" against {against}: give the CA that signed the broker's certificate"
    )
