"""The HTTP app: API routes, pages, error mapping, offline docs, live stream, metrics."""

# Its lifespan can run the service itself (tests, embedding); `facilities run` starts the
# service first and serves this app over it.

import base64
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from facilities import __version__
from facilities.api import views
from facilities.api.bodies import BodyLimit
from facilities.api.errors import install_error_handlers
from facilities.api.instrument import HttpMetrics
from facilities.api.live import QUEUE_SIZE, LiveFeed
from facilities.api.routes import events, health, public, residents, staff
from facilities.service import Service
from facilities.web import pages

DESCRIPTION = """
Status of the e-bike charging stations and bicycle garages for residents, gate opening for
the garage-access app, and alerts and history for property managers.

Public paths need no token. Residents' and staff paths take `Authorization: Bearer <token>`
(tokens come from `facilities residents add` / `facilities staff add`). Every refusal is
`{"error": "...", "detail": "..."}` with its status. Times are ISO 8601 UTC.
"""

# The docs page's script and style come from the service itself: phones and offices in the
# district often cannot reach a CDN.
_DOCS_ASSETS = "/docs-assets"


# The docs page runs FastAPI's one inline script (it starts Swagger UI) and nothing else:
# the policy allows that script by its hash, so an injected one cannot run. Inline styles
# stay allowed: Swagger UI sets style attributes as it renders.
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def docs_policy(html: bytes) -> str:
    """The Content-Security-Policy of the docs page `html`."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


def _docs_assets() -> StaticFiles:
    assets = resources.files("fastapi_offline").joinpath("static")
    return StaticFiles(directory=str(assets))


def _snapshot(service: Service) -> Any:
    """What the live stream sends when a device changed: the same body as its GET."""

    def snapshot(device: str) -> tuple[str, dict[str, Any]] | None:
        site = service.site
        if device in site.stations:
            spec = site.stations[device]
            typical, now = service.typical_charge(device), service.now()
            body = service.live.station(
                device,
                lambda live, alerts: views.station_detail(
                    spec, live, alerts, typical_charge=typical, now=now
                ),
            )
            return "station", body.model_dump(mode="json")
        if device in site.garages:
            gspec = site.garages[device]
            gbody = service.live.garage(
                device, lambda live, alerts: views.garage_detail(gspec, live, alerts)
            )
            return "garage", gbody.model_dump(mode="json")
        return None

    return snapshot


def create_app(
    service: Service,
    *,
    run_service: bool = True,
    live_queue: int = QUEUE_SIZE,
    public_url: str | None = None,
) -> FastAPI:
    """The HTTP app over `service`. With `run_service`, its lifespan starts and stops the
    service (tests, embedding); `facilities run` starts the service itself first, so that
    an unreachable broker is one line on stderr instead of a failed lifespan. `live_queue`:
    events a live-stream client may fall behind before it is dropped. `public_url`: the
    address QR codes print (default `--public-url`, else the configured listen address)."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_service:
            async with service.running():
                yield
        else:
            yield

    app = FastAPI(
        title="facilities",
        version=__version__,
        summary="E-bike charging stations and bicycle garages of Changqiao Subdistrict",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    listen = service.settings.listen
    app.state.public_url = (
        public_url or service.settings.public_url or pages.listen_url(listen.host, listen.port)
    )
    app.state.feed = feed = LiveFeed(_snapshot(service), queue_size=live_queue)
    service.changes.subscribe(feed.changed)
    service.api_metrics.live_clients.set_function(lambda: feed.subscribers)
    app.add_middleware(BodyLimit, metrics=service.api_metrics)
    app.add_middleware(HttpMetrics, metrics=service.api_metrics)  # outermost: counts 413s too
    install_error_handlers(app)
    for module in (health, public, residents, staff, events):
        app.include_router(module.router)
    app.include_router(pages.router)
    app.mount(_DOCS_ASSETS, _docs_assets(), name="docs-assets")
    app.mount("/static", pages.static_files(), name="static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="facilities API",
            swagger_js_url=f"{_DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{_DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{_DOCS_ASSETS}/favicon.png",
        )
        page.headers["Content-Security-Policy"] = docs_policy(bytes(page.body))
        return page

    return app
