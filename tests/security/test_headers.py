"""Headers (issue 11, point 12): nosniff everywhere, a CSP on /docs, a quiet /healthz."""

import re

import httpx
import pytest

from tests.security.conftest import Run

pytestmark = pytest.mark.slow

# One path of each kind: page, API, static asset, docs asset, error, metrics, stream.
PATHS = [
    "/",
    "/api/stations",
    "/static/app.css",
    "/docs-assets/swagger-ui.css",
    "/docs",
    "/openapi.json",
    "/api/stations/nope",
    "/api/alerts",
    "/nowhere",
    "/metrics",
    "/healthz",
    "/stations/cs-07/qr.svg",
]


def test_every_response_says_nosniff(run_service: Run) -> None:
    service = run_service()
    base = f"http://127.0.0.1:{service.port}"
    with httpx.Client(base_url=base, timeout=5) as http:
        for path in PATHS:
            response = http.get(path)
            assert response.headers.get("x-content-type-options") == "nosniff", path
        refused = http.post("/api/garages/g-cq4/gates/north/open")
        assert refused.status_code == 401
        assert refused.headers.get("x-content-type-options") == "nosniff"
        with http.stream("GET", "/api/events") as stream:
            assert stream.status_code == 200
            assert stream.headers.get("x-content-type-options") == "nosniff"


def test_the_docs_page_has_a_content_security_policy(run_service: Run) -> None:
    service = run_service()
    docs = httpx.get(f"http://127.0.0.1:{service.port}/docs", timeout=5)
    policy = docs.headers.get("content-security-policy", "")
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    # its one inline script is allowed by its hash, not by 'unsafe-inline'
    assert re.search(r"script-src 'self' 'sha256-[A-Za-z0-9+/=]+'", policy), policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]


def test_anonymous_health_does_not_name_the_broker_user(run_service: Run) -> None:
    service = run_service()
    body = httpx.get(f"http://127.0.0.1:{service.port}/healthz", timeout=5).text
    assert "@" not in body
    assert "facilities" not in body  # the service's broker user
