"""The HTTP app: API routes, pages, error mapping, offline docs, live stream, metrics."""

import base64
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from importlib import resources

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from facilities import __version__
from facilities.api import document
from facilities.api.bodies import BodyLimit
from facilities.api.deps import Services
from facilities.api.errors import REPLAYED, install_error_handlers
from facilities.api.instrument import HttpMetrics
from facilities.api.routes import events, health, public, quarantine, residents, staff
from facilities.api.web import pages

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


def create_app(services: Services, *, public_url: str | None = None) -> FastAPI:
    """The HTTP app over `services` (made by the service's composition, facilities/service.py):
    creating it starts nothing and changes nothing; the service runs beside it. `public_url`:
    the address QR codes print (default `--public-url`, else the listen address). Its
    lifespan's end closes the live streams, so that they do not hold a stop."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            services.feed.close()

    app = FastAPI(
        title="facilities",
        version=__version__,
        summary="E-bike charging stations and bicycle garages of Changqiao Subdistrict",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=document.operation_id,
    )
    app.openapi = lambda: document.openapi(app)  # type: ignore[method-assign]
    app.state.services = services
    listen = services.listen
    app.state.public_url = (
        public_url or services.public_url or pages.listen_url(listen.host, listen.port)
    )
    app.add_middleware(BodyLimit, metrics=services.metrics)
    app.add_middleware(HttpMetrics, metrics=services.metrics)  # counts 413s too
    if services.cors_origins:  # outermost: a preflight is answered before anything else
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(services.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Retry-After", "WWW-Authenticate", REPLAYED],
            max_age=600,
        )
    install_error_handlers(app)
    for module in (health, public, residents, staff, quarantine, events):
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
