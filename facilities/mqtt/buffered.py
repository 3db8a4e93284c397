"""paho with a buffered socket: many packets per `recv` system call instead of several each."""

# paho reads a packet with one `recv` for its type, one per byte of its length and one or more
# for the rest: three to five system calls per message, each giving up the GIL, which the
# event loop's and SQLite's threads then hold for up to a switch interval (5 ms) before paho
# gets it back. Reading up to RECV_BYTES at once and serving paho's small reads from memory
# leaves one system call per ~50 ten-port messages (docs/performance.md, "paho's reads").

import socket
import ssl
from typing import TYPE_CHECKING

import paho.mqtt.client as paho

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

# One read takes what the kernel holds up to this much: ~48 ten-port telemetry messages
# (1,369 bytes each), or ~290 of one port. The socket's receive buffer is larger still.
RECV_BYTES = 64 * 1024


class BufferedSocket:
    """A connected, non-blocking TCP socket whose reads come from a buffer refilled with one
    `recv` when empty. `pending()` tells paho that bytes wait in the buffer (it is what paho
    asks an SSL socket), so that its loop reads them before it waits in `select` again."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._at = 0

    def recv(self, buffer_size: int) -> bytes:
        if self._at >= len(self._buffer):
            data = self._sock.recv(max(buffer_size, RECV_BYTES))  # BlockingIOError: paho waits
            if len(data) <= buffer_size:
                return data  # what paho asked for, or b"" at the end of the stream
            self._buffer, self._at = data, 0
        start = self._at
        self._at = min(start + buffer_size, len(self._buffer))
        return self._buffer[start : self._at]

    def pending(self) -> int:
        """Bytes received and not yet read."""
        return len(self._buffer) - self._at

    def send(self, buffer: bytes | bytearray) -> int:
        return self._sock.send(buffer)

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)


class BufferedClient(paho.Client):
    """paho's client, its plain TCP connections read through a BufferedSocket (TLS and
    WebSocket connections as paho makes them: those buffer already)."""

    def _create_socket(self) -> "SocketLike":
        sock = super()._create_socket()
        if isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket):
            return BufferedSocket(sock)
        return sock
