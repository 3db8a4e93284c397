"""HTML pages: residents' status, QR codes and their sheet, the staff console."""

# Data comes from the same views as the JSON API; texts from the Babel catalogs.

import asyncio
import functools
import io
import socket
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import segno
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from facilities.api import models, views
from facilities.api.deps import EstimatesDep, LiveDep, NowDep, SiteDep
from facilities.errors import NotFound
from facilities.rule_ids import RuleId
from facilities.rules.live_state import LiveState, Reading
from facilities.site import Garage, Site
from facilities.web.i18n import LANGUAGES, choose, translations

router = APIRouter(include_in_schema=False)

# The district's clock for times printed in a page (a phone re-renders live updates in its own).
LOCAL_TIME = ZoneInfo("Asia/Shanghai")
LANG_COOKIE_DAYS = 365
# The pages load nothing from elsewhere and run no inline script: say so to the browser, so
# that an injected script or a tampered link cannot run or leak anything.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
Id = Annotated[str, Path(max_length=64)]
Lang = Annotated[str | None, Query(max_length=8, description="zh or en")]


def static_files() -> StaticFiles:
    return StaticFiles(directory=str(resources.files("facilities.web").joinpath("static")))


@cache
def _environment(language: str) -> Environment:
    """One template environment per language: the catalog is fixed for each, so that
    concurrent requests in different languages never share gettext state."""
    env = Environment(
        loader=PackageLoader("facilities.web", "templates"),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


def labels(language: str) -> dict[str, Any]:
    """Every text the pages' scripts write, in `language`."""
    _ = translations(language).gettext
    return {
        "states": {
            "idle": _("Free"),
            "charging": _("Charging"),
            "full": _("Charged, waiting to be unplugged"),
            "fault": _("Fault"),
            "disabled": _("Switched off"),
            "unknown": _("No data yet"),
        },
        "free_at": _("free at about %(time)s"),
        "time_zone": LOCAL_TIME.key,
        "gate_open": _("Open"),
        "gate_closed": _("Closed"),
        "unknown": _("No data yet"),
        "updated": _("Updated"),
        "severity": {
            "critical": _("Critical"),
            "warning": _("Warning"),
            "info": _("Information"),
        },
        "acknowledge": _("Acknowledge"),
        "acknowledged_by": _("acknowledged by %(who)s"),
        "raised_at": _("raised %(time)s"),
        "no_actions": _("No command sent"),
        "outcomes": {
            "acked": _("done"),
            "refused": _("refused by the device"),
            "timeout": _("no answer from the device"),
            "pending": _("waiting for the device"),
        },
        "rules": {
            RuleId.PORT_OVERLOAD: _("Port overload"),
            RuleId.STATION_OVERLOAD: _("Station overload"),
            RuleId.PORT_OVER_TEMPERATURE: _("Socket overheating"),
            RuleId.OVER_TEMPERATURE: _("Overheating"),
            RuleId.TEMPERATURE_RISE: _("Temperature rising fast"),
            RuleId.LEAKAGE: _("Leakage current"),
            RuleId.SMOKE: _("Smoke"),
            RuleId.DEVICE_FAULT: _("Device fault"),
            RuleId.OFFLINE: _("Offline"),
            RuleId.CLOCK_SKEW: _("Device clock wrong"),
            RuleId.CHARGE_COMPLETE: _("Charge complete, port switched off"),
            RuleId.NO_LOAD: _("Nothing charging, port switched off"),
            RuleId.SESSION_TOO_LONG: _("Charging too long"),
            RuleId.OVER_CAPACITY: _("More bicycles than bays"),
            RuleId.GATE_HELD_OPEN: _("Gate held open"),
            RuleId.GATE_FORCED: _("Gate forced open"),
            RuleId.ACCESS_DENIED_BURST: _("Many refused entries"),
            RuleId.COMMAND_FAILED: _("Command not carried out"),
        },
        "cutoff_off": _("switched off %(time)s"),
        "cutoff_open": _("held open since %(time)s"),
        "cutoff_station": _("with the whole station"),
        "cutoff_held": _("kept so while the alert is open"),
        "cutoff_released": _("the alert is over: switch it on when ready"),
        "switch_on": _("Switch on"),
        "bad_token": _("This token is not valid for staff."),
        "power_done": _("Done: the station confirmed."),
        "power_failed": _("Not done: %(detail)s"),
    }


def _render(
    request: Request, language: str, template: str, *, page: str, **context: Any
) -> HTMLResponse:
    body = (
        _environment(language)
        .get_template(template)
        .render(
            lang=language,
            page=page,
            path=request.url.path,
            labels=labels(language),
            **context,
        )
    )
    response = HTMLResponse(body)
    if request.query_params.get("lang") in LANGUAGES:
        # the visitor chose: keep it for the next pages (and the next visit)
        response.set_cookie(
            "lang", language, max_age=LANG_COOKIE_DAYS * 86400, samesite="lax", httponly=True
        )
    response.headers["Vary"] = "Accept-Language, Cookie"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def _language(request: Request, lang: str | None) -> str:
    return choose(lang, request.cookies.get("lang"), request.headers.get("accept-language"))


def _name(language: str, item: Any) -> str:
    return str(item.name if language == "zh" else item.name_en)


def _time(when: datetime | None) -> str:
    return when.astimezone(LOCAL_TIME).strftime("%H:%M") if when else ""


def gates_released(spec: Garage) -> bool:
    """Whether smoke opens this garage's gates (the site's `fire_release_gates`): its smoke
    warning then says they are held open."""
    return spec.thresholds.fire_release_gates and bool(spec.gates)


def _port_detail(port: models.Port, language: str) -> str:
    if port.state is not models.PortStatus.CHARGING:
        return ""
    parts = [f"{port.power_w:.0f} W"] if port.power_w is not None else []
    if port.free_estimate_at is not None:
        free_at = translations(language).gettext("free at about %(time)s")
        parts.append(free_at % {"time": _time(port.free_estimate_at)})
    return " · ".join(parts)


@router.get("/", response_class=HTMLResponse)
async def index(request: Request, site: SiteDep, live: LiveDep, lang: Lang = None) -> HTMLResponse:
    language = _language(request, lang)

    def view(reading: Reading) -> list[dict[str, Any]]:
        out = []
        for community in site.communities.values():
            stations = [
                views.station(spec, reading.stations[spec.id], reading.alerts.values())
                for spec in site.stations.values()
                if spec.community == community.id
            ]
            garages = [
                views.garage(spec, reading.garages[spec.id], reading.alerts.values())
                for spec in site.garages.values()
                if spec.community == community.id
            ]
            if not stations and not garages:
                continue
            out.append(
                {
                    "id": community.id,
                    "display_name": _name(language, community),
                    "stations": [
                        s.model_dump() | {"display_name": _name(language, s)} for s in stations
                    ],
                    "garages": [
                        g.model_dump()
                        | {
                            "display_name": _name(language, g),
                            "gates_released": gates_released(site.garages[g.id]),
                        }
                        for g in garages
                    ],
                }
            )
        return out

    return _render(request, language, "index.html", page="index", communities=live.read(view))


def _missing(request: Request, language: str) -> HTMLResponse:
    """An old sticker, a typo: a page in the visitor's language that leads back, not JSON."""
    response = _render(request, language, "missing.html", page="missing")
    response.status_code = 404
    return response


def _station_detail(
    site: Site, live: LiveState, typical: timedelta, now: datetime, station_id: str
) -> models.StationDetail | None:
    spec = site.stations.get(station_id)
    if spec is None:
        return None
    return live.station(
        spec.id,
        lambda live, alerts: views.station_detail(
            spec, live, alerts, typical_charge=typical, now=now
        ),
    )


@router.get("/stations/{station_id}", response_class=HTMLResponse)
async def station_page(
    request: Request,
    site: SiteDep,
    live: LiveDep,
    now: NowDep,
    estimates: EstimatesDep,
    station_id: Id,
    lang: Lang = None,
) -> HTMLResponse:
    language = _language(request, lang)
    detail = _station_detail(site, live, estimates(station_id), now, station_id)
    if detail is None:
        return _missing(request, language)
    station = detail.model_dump() | {
        "display_name": _name(language, detail),
        "ports": [
            p.model_dump(mode="json") | {"detail": _port_detail(p, language)} for p in detail.ports
        ],
    }
    community = site.communities[detail.community]
    return _render(
        request,
        language,
        "station.html",
        page="station",
        item_id=detail.id,
        station=station,
        community_name=_name(language, community),
    )


@router.get("/garages/{garage_id}", response_class=HTMLResponse)
async def garage_page(
    request: Request, site: SiteDep, live: LiveDep, garage_id: Id, lang: Lang = None
) -> HTMLResponse:
    language = _language(request, lang)
    spec = site.garages.get(garage_id)
    if spec is None:
        return _missing(request, language)
    detail = live.garage(spec.id, lambda live, alerts: views.garage_detail(spec, live, alerts))
    garage = detail.model_dump() | {
        "display_name": _name(language, detail),
        "gates_released": gates_released(spec),
    }
    return _render(
        request,
        language,
        "garage.html",
        page="garage",
        item_id=detail.id,
        garage=garage,
        community_name=_name(language, site.communities[detail.community]),
    )


# -- QR codes ------------------------------------------------------------------------------

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
    language = _language(request, lang)
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
    return _render(request, language, "qr_sheet.html", page="qr", stickers=stickers)


# -- staff ---------------------------------------------------------------------------------


@router.get("/staff", response_class=HTMLResponse)
async def staff_console(request: Request, site: SiteDep, lang: Lang = None) -> HTMLResponse:
    language = _language(request, lang)
    stations = [
        {"id": s.id, "name": _name(language, s), "ports": s.ports} for s in site.stations.values()
    ]
    return _render(request, language, "staff.html", page="staff", stations=stations)
