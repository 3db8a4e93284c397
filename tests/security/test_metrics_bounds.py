"""Metrics and logs stay bounded whatever clients send (issue 11, point 6: nothing a client
sends grows memory or the disk without bound): the method label of the HTTP metrics is one of
the methods the API knows, or `other`; uvicorn's warnings about a client's malformed requests
are logged at most 10 a minute each."""

import socket

import httpx
import pytest

from tests.security.conftest import Run

pytestmark = pytest.mark.slow


def test_invented_methods_add_no_metric_series(run_service: Run) -> None:
    # Before: each new method (any token, up to 16 KiB) was a new label value of the request
    # counter and the duration histogram: 3,000 requests of 8 KB methods made /metrics
    # 472 MB, took 12 s to scrape, held the event loop up to 5 s and the process at ~1 GB.
    service = run_service()
    for number in range(50):
        with socket.create_connection(("127.0.0.1", service.port), timeout=5) as sock:
            method = f"X{number:03d}{'A' * 1000}"
            sock.sendall(f"{method} / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            assert sock.recv(100).startswith(b"HTTP/1.1 405")
    text = httpx.get(f"http://127.0.0.1:{service.port}/metrics", timeout=5).text
    assert "AAAA" not in text
    series = [line for line in text.splitlines() if line.startswith("facilities_http_requests")]
    assert any('method="other"' in line for line in series), series


def test_malformed_requests_do_not_write_a_log_line_each(run_service: Run) -> None:
    # Before: "Invalid HTTP request received." and "Unsupported upgrade request." were
    # logged once per request, by anyone (500 requests, 500 warnings).
    service = run_service()
    starts = [
        b"BAD\x01 / HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, close\r\n\r\n",
    ]
    for number in range(100):
        with socket.create_connection(("127.0.0.1", service.port), timeout=5) as sock:
            sock.sendall(starts[number % 2])
            assert sock.recv(100).startswith(b"HTTP/1.1 ")
    log = service.log.read_text()
    assert log.count("Invalid HTTP request received.") == 10
    assert log.count("Unsupported upgrade request.") == 10
    assert httpx.get(f"http://127.0.0.1:{service.port}/healthz", timeout=5).status_code == 200
