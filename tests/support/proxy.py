"""A TCP proxy on loopback that a test cuts and restores: the network link between two brokers."""

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from facilities.mosquitto import free_port

# How often the accepting thread looks whether it should stop; a cut takes effect at once.
ACCEPT_POLL_S = 0.1
CONNECT_TIMEOUT_S = 2.0
CHUNK = 65536


@dataclass
class Proxy:
    """Forwards each connection on `port` to `upstream_port`. `cut()` drops every connection
    and refuses new ones (closed as soon as accepted: what a dead link looks like to a client
    that reconnects) until `restore()`."""

    upstream_port: int
    port: int = 0
    connections: int = 0  # connections forwarded so far
    _open: bool = True
    _closed: bool = False
    _sockets: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _listener: socket.socket | None = None
    _thread: threading.Thread | None = None

    def start(self) -> "Proxy":
        self.port = self.port or free_port()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(ACCEPT_POLL_S)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._thread.start()
        return self

    def cut(self) -> None:
        """Drop every connection now and refuse new ones."""
        with self._lock:
            self._open = False
            dropped, self._sockets = self._sockets, set()
        for sock in dropped:
            _drop(sock)

    def restore(self) -> None:
        """Forward new connections again."""
        with self._lock:
            self._open = True

    def close(self) -> None:
        self.cut()
        self._closed = True
        if self._thread is not None:
            self._thread.join(5)
        if self._listener is not None:
            self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            if not self._open:
                _drop(client)
                continue
            try:
                upstream = socket.create_connection(
                    ("127.0.0.1", self.upstream_port), timeout=CONNECT_TIMEOUT_S
                )
            except OSError:  # the upstream broker is down: so is the link
                _drop(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if not self._open:
                    _drop(client)
                    _drop(upstream)
                    continue
                self._sockets |= {client, upstream}
                self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(CHUNK):
                dst.sendall(data)
        except OSError:  # cut: the sockets were shut under it
            pass
        finally:  # one side gone: the other must see the link end too
            with self._lock:
                self._sockets -= {src, dst}
            _drop(src)
            _drop(dst)


def _drop(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already shut or never connected
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
