"""The Host header is not trusted (issue 11, point 4): QR codes and the sticker sheet print
the configured address, whatever Host a client sends; no Host makes a 5xx."""

import io

import httpx
import pytest
import segno

from tests.security.conftest import Run

pytestmark = pytest.mark.slow

HOSTS = ["evil.example", "evil.example:8443", "a" * 3000, "x" * 200 + ".example"]
PAGES = ["/qr", "/stations/cs-07/qr.svg", "/garages/g-hc3/qr.svg", "/", "/api/stations", "/docs"]


def _svg(url: str) -> bytes:
    out = io.BytesIO()
    segno.make_qr(url, error="m").save(out, kind="svg", scale=4, border=4, xmldecl=False)
    return out.getvalue()


def test_stickers_print_the_public_url_whatever_the_host(run_service: Run) -> None:
    service = run_service("--public-url", "https://bikes.example.cn/")
    base = f"http://127.0.0.1:{service.port}"
    with httpx.Client(base_url=base, timeout=10) as http:
        expected = _svg("https://bikes.example.cn/stations/cs-07")
        for host in HOSTS:
            svg = http.get("/stations/cs-07/qr.svg", headers={"Host": host})
            assert svg.status_code == 200, host[:40]
            assert svg.content == expected, host[:40]
            sheet = http.get("/qr", headers={"Host": host})
            assert sheet.status_code == 200
            assert "https://bikes.example.cn/garages/g-hc3" in sheet.text
            assert host not in sheet.text


def test_without_a_public_url_the_listen_address_is_printed_and_said(run_service: Run) -> None:
    service = run_service()
    listen = f"http://127.0.0.1:{service.port}"
    log = service.log.read_text()
    assert "--public-url is not set" in log
    assert listen in log
    with httpx.Client(base_url=listen, timeout=10) as http:
        for host in HOSTS:
            svg = http.get("/stations/cs-07/qr.svg", headers={"Host": host})
            assert svg.content == _svg(f"{listen}/stations/cs-07"), host[:40]
            assert host not in http.get("/qr", headers={"Host": host}).text


def test_no_host_header_makes_a_server_error(run_service: Run) -> None:
    service = run_service()
    with httpx.Client(base_url=f"http://127.0.0.1:{service.port}", timeout=10) as http:
        for host in [*HOSTS, "[::1", "a b", "%00", "..", "xn--n-xja.example", "a\\tb"]:
            for path in PAGES:
                response = http.get(path, headers={"Host": host})
                assert response.status_code < 500, (host[:40], path, response.status_code)


def test_a_public_url_that_cannot_be_printed_is_refused_at_start(run_service: Run) -> None:
    from tests.support.processes import run_cli

    for bad in ("bikes.example.cn", "ftp://x", "https://x/?a=b", "https://" + "a" * 300):
        done = run_cli("run", "--public-url", bad, "--connect-timeout", "1", timeout_s=20)
        assert done.returncode == 2, bad
        assert "--public-url" in done.stderr
