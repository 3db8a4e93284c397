"""HTML pages: residents' status of a community, a station and a garage; the staff console."""

# Data comes from the same views as the JSON API; texts from the Babel catalogs. The QR codes
# and their sheet are `qr.py`'s routes, included here.

from datetime import datetime
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from facilities.api import models, views
from facilities.api.deps import EstimatesDep, LiveDep, NowDep, SiteDep
from facilities.api.web import qr
from facilities.api.web.i18n import translations
from facilities.api.web.labels import console_labels
from facilities.api.web.qr import listen_url
from facilities.api.web.render import Id, Lang, language_of, local_time, name, render
from facilities.estimates import Typical
from facilities.rules.live_state import LiveState, Reading
from facilities.site import Garage, Site

__all__ = ["listen_url", "router", "static_files"]  # listen_url: the service's default address

router = APIRouter(include_in_schema=False)
router.include_router(qr.router)


def static_files() -> StaticFiles:
    return StaticFiles(directory=str(resources.files("facilities.api.web").joinpath("static")))


def gates_released(spec: Garage) -> bool:
    """Whether smoke opens this garage's gates (the site's `fire_release_gates`): its smoke
    warning then says they are held open."""
    return spec.thresholds.fire_release_gates and bool(spec.gates)


def _port_detail(port: models.Port, language: str) -> str:
    if port.state is not models.PortStatus.CHARGING:
        return ""
    parts = [f"{port.power_w:.0f} W"] if port.power_w is not None else []
    if port.free_estimate_at is not None:
        free_at = translations(language).gettext("charged by about %(time)s")
        parts.append(free_at % {"time": local_time(port.free_estimate_at)})
    return " · ".join(parts)


@router.get("/", response_class=HTMLResponse)
async def index(request: Request, site: SiteDep, live: LiveDep, lang: Lang = None) -> HTMLResponse:
    language = language_of(request, lang)

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
                    "display_name": name(language, community),
                    "stations": [
                        s.model_dump() | {"display_name": name(language, s)} for s in stations
                    ],
                    "garages": [
                        g.model_dump()
                        | {
                            "display_name": name(language, g),
                            "gates_released": gates_released(site.garages[g.id]),
                        }
                        for g in garages
                    ],
                }
            )
        return out

    return render(request, language, "index.html", page="index", communities=live.read(view))


def _missing(request: Request, language: str) -> HTMLResponse:
    """An old sticker, a typo: a page in the visitor's language that leads back, not JSON."""
    response = render(request, language, "missing.html", page="missing")
    response.status_code = 404
    return response


def _station_detail(
    site: Site, live: LiveState, typical: Typical, now: datetime, station_id: str
) -> models.StationDetail | None:
    spec = site.stations.get(station_id)
    if spec is None:
        return None
    return live.station(
        spec.id,
        lambda live, alerts: views.station_detail(spec, live, alerts, typical=typical, now=now),
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
    language = language_of(request, lang)
    detail = _station_detail(site, live, estimates(station_id), now, station_id)
    if detail is None:
        return _missing(request, language)
    station = detail.model_dump() | {
        "display_name": name(language, detail),
        "ports": [
            p.model_dump(mode="json") | {"detail": _port_detail(p, language)} for p in detail.ports
        ],
    }
    community = site.communities[detail.community]
    return render(
        request,
        language,
        "station.html",
        page="station",
        item_id=detail.id,
        station=station,
        community_name=name(language, community),
    )


@router.get("/garages/{garage_id}", response_class=HTMLResponse)
async def garage_page(
    request: Request, site: SiteDep, live: LiveDep, garage_id: Id, lang: Lang = None
) -> HTMLResponse:
    language = language_of(request, lang)
    spec = site.garages.get(garage_id)
    if spec is None:
        return _missing(request, language)
    detail = live.garage(spec.id, lambda live, alerts: views.garage_detail(spec, live, alerts))
    garage = detail.model_dump() | {
        "display_name": name(language, detail),
        "gates_released": gates_released(spec),
        "gates": [g.model_dump() | {"display_name": name(language, g)} for g in detail.gates],
    }
    stations = [
        {"id": s, "name": name(language, site.stations[s])}
        for s in detail.stations
        if s in site.stations
    ]
    return render(
        request,
        language,
        "garage.html",
        page="garage",
        item_id=detail.id,
        garage=garage,
        stations=stations,
        community_name=name(language, site.communities[detail.community]),
    )


# -- staff ---------------------------------------------------------------------------------


@router.get("/staff", response_class=HTMLResponse)
async def staff_console(request: Request, site: SiteDep, lang: Lang = None) -> HTMLResponse:
    language = language_of(request, lang)
    stations = [
        {"id": s.id, "name": name(language, s), "ports": s.ports} for s in site.stations.values()
    ]
    # The console names stations and garages as people know them, not by their ids.
    places = {
        "stations": {s.id: name(language, s) for s in site.stations.values()},
        "garages": {g.id: name(language, g) for g in site.garages.values()},
        "gates": {
            f"{g.id}/{gate.id}": name(language, gate)
            for g in site.garages.values()
            for gate in g.gate_names
        },
    }
    return render(
        request,
        language,
        "staff.html",
        page="staff",
        stations=stations,
        places=places,
        console=console_labels(language),
    )
