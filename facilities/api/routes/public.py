"""Public status (no token): communities, stations, garages, from the live state."""

from typing import Annotated

from fastapi import APIRouter, Path

from facilities.api import models, views
from facilities.api.deps import EstimatesDep, LiveDep, NowDep, SiteDep
from facilities.api.errors import INVALID, Responses, refusal
from facilities.errors import NotFound

router = APIRouter(prefix="/api", tags=["public"], responses=INVALID)

Id = Annotated[str, Path(max_length=64, description="id from the site file")]
_NOT_FOUND: Responses = {404: refusal("no such id in the site file")}


@router.get("/communities", summary="Communities with their free ports and free bays")
async def communities(site: SiteDep, live: LiveDep) -> list[models.Community]:
    return live.read(lambda r: views.communities(site, r.stations, r.garages, r.alerts.values()))


@router.get("/stations", summary="Every charging station: online, free ports, power")
async def stations(site: SiteDep, live: LiveDep) -> list[models.Station]:
    return live.read(
        lambda r: [
            views.station(spec, r.stations[spec.id], r.alerts.values())
            for spec in site.stations.values()
        ]
    )


@router.get(
    "/stations/{station_id}",
    responses=_NOT_FOUND,
    summary="One station with each port's state and, while charging, when it may be free",
)
async def station(
    site: SiteDep, live: LiveDep, now: NowDep, estimates: EstimatesDep, station_id: Id
) -> models.StationDetail:
    spec = site.stations.get(station_id)
    if spec is None:
        raise NotFound(f"no station {station_id}")
    typical = estimates(spec.id)
    return live.station(
        spec.id,
        lambda live, alerts: views.station_detail(spec, live, alerts, typical=typical, now=now),
    )


@router.get("/garages", summary="Every garage: capacity, occupancy, free bays")
async def garages(site: SiteDep, live: LiveDep) -> list[models.Garage]:
    return live.read(
        lambda r: [
            views.garage(spec, r.garages[spec.id], r.alerts.values())
            for spec in site.garages.values()
        ]
    )


@router.get(
    "/garages/{garage_id}",
    responses=_NOT_FOUND,
    summary="One garage with its gates' state and last events",
)
async def garage(site: SiteDep, live: LiveDep, garage_id: Id) -> models.GarageDetail:
    spec = site.garages.get(garage_id)
    if spec is None:
        raise NotFound(f"no garage {garage_id}")
    return live.garage(spec.id, lambda live, alerts: views.garage_detail(spec, live, alerts))
