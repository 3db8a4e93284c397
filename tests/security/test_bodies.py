"""Request bodies (issue 11, point 3): a body over the limit is refused before it is read,
and a route that needs a token answers 401 before it reads or parses any body."""

import socket
import time

import pytest

from tests.api_support import Api, bearer
from tests.security.conftest import Run

POWER = "/api/stations/cs-07/ports/1/power"
LIMIT = 16 * 1024


def _exchange(port: int, head: bytes, chunks: list[bytes], *, wait_s: float = 5.0) -> bytes:
    """Send a request head and body chunks on a raw socket; what the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed before the body was all sent
        answer = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:  # until the server closes: it says connection: close
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            answer += data
    return answer


@pytest.mark.slow
def test_a_declared_large_body_is_refused_before_it_is_sent(run_service: Run) -> None:
    service = run_service()
    head = (
        f"POST {POWER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {15 * 1024 * 1024}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = _exchange(service.port, head, [b'{"on": '])  # then nothing: the server must not wait
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"error": "too_large"' in answer
    assert time.monotonic() - started < 2.0


@pytest.mark.slow
def test_a_chunked_body_is_counted_as_it_comes(run_service: Run) -> None:
    service = run_service()
    head = (
        f"POST {POWER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"400\r\n" + b" " * 1024 + b"\r\n"
    answer = _exchange(service.port, head, [chunk] * (LIMIT // 1024 + 4))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


async def test_no_token_is_401_before_the_body_is_parsed(api: Api) -> None:
    for body in (b'{"on": "maybe"}', b"not json at all", b"[" * 8000):
        refused = await api.http.post(
            POWER, content=body, headers={"Content-Type": "application/json"}
        )
        assert refused.status_code == 401, (body[:20], refused.text)
        assert refused.headers["WWW-Authenticate"] == "Bearer"
    refused = await api.http.post(POWER, json={"on": False}, headers=bearer("guess"))
    assert refused.status_code == 401


async def test_a_body_just_under_the_limit_is_read(api: Api) -> None:
    from facilities.access import Role

    _staff, token = await api.person(Role.STAFF, "物业")
    padded = b'{"on": false' + b" " * (LIMIT - 20) + b"}"
    assert len(padded) <= LIMIT
    answer = await api.http.post(
        POWER, content=padded, headers={**bearer(token), "Content-Type": "application/json"}
    )
    assert answer.status_code != 413
    too_big = await api.http.post(
        POWER,
        content=padded + b" " * 64,
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    assert too_big.status_code == 413
    assert too_big.json()["error"] == "too_large"
