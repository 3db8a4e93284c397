"""QR codes of the stations and garages, and the printable sheet of them all."""

import asyncio
import functools
import io
import socket
from datetime import timedelta

import segno
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from facilities.api.deps import SiteDep
from facilities.api.web.render import Id, Lang, language_of, render
from facilities.errors import NotFound

router = APIRouter(include_in_schema=False)

# The codes are of the site's devices at one configured address: their number is bounded by
# the site file; this bound holds even if that changes (a test's apps, a reload).
QR_CACHED = 512


def listen_url(host: str, port: int) -> str:
    """The address printed in QR codes when `--public-url` is not set: where the service
    listens (a wildcard address by this machine's name)."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104  # a name for it, not a bind
        host = socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def sticker_base(request: Request) -> str:
    """The address printed in QR codes and on the sticker sheet: from the configuration only,
    never from the request's Host header (docs/pages.md)."""
    base: str = request.app.state.public_url
    return base


@functools.lru_cache(maxsize=QR_CACHED)
def _qr_svg(url: str) -> bytes:
    out = io.BytesIO()
    # Error correction M: a sticker that gets scratched or dirty still scans.
    segno.make_qr(url, error="m").save(out, kind="svg", scale=4, border=4, xmldecl=False)
    return out.getvalue()


async def _svg(url: str) -> Response:
    # ~100 ms for a new code: made off the event loop, which runs the safety rules
    body = await asyncio.to_thread(_qr_svg, url)
    return Response(
        body,
        media_type="image/svg+xml",
        headers={"Cache-Control": f"public, max-age={int(timedelta(days=1).total_seconds())}"},
    )


@router.get("/stations/{station_id}/qr.svg")
async def station_qr(request: Request, site: SiteDep, station_id: Id) -> Response:
    if station_id not in site.stations:
        raise NotFound(f"no station {station_id}")
    return await _svg(f"{sticker_base(request)}/stations/{station_id}")


@router.get("/garages/{garage_id}/qr.svg")
async def garage_qr(request: Request, site: SiteDep, garage_id: Id) -> Response:
    if garage_id not in site.garages:
        raise NotFound(f"no garage {garage_id}")
    return await _svg(f"{sticker_base(request)}/garages/{garage_id}")


@router.get("/qr", response_class=HTMLResponse)
async def qr_sheet(request: Request, site: SiteDep, lang: Lang = None) -> HTMLResponse:
    """Every code on one printable page, for the property office."""
    language = language_of(request, lang)
    base = sticker_base(request)
    stickers = [
        {
            "id": s.id,
            "name": s.name,
            "name_en": s.name_en,
            "url": f"{base}/{kind}/{s.id}",
            "qr": f"/{kind}/{s.id}/qr.svg",
        }
        for kind, items in (
            ("stations", site.stations.values()),
            ("garages", site.garages.values()),
        )
        for s in items
    ]
    return render(request, language, "qr_sheet.html", page="qr", stickers=stickers)
