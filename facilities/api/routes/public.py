"""Public status (no token): communities, stations, garages, from the live state."""

from typing import Annotated

from fastapi import APIRouter, Path

from facilities.api import models, views
from facilities.api.deps import ServiceDep
from facilities.api.errors import INVALID, Responses, refusal
from facilities.errors import NotFound
from facilities.rules.engine import Engine

router = APIRouter(prefix="/api", tags=["public"], responses=INVALID)

Id = Annotated[str, Path(max_length=64, description="id from the site file")]
_NOT_FOUND: Responses = {404: refusal("no such id in the site file")}


@router.get("/communities", summary="Communities with their free ports and free bays")
async def communities(service: ServiceDep) -> list[models.Community]:
    return service.rules.read(
        lambda e: views.communities(service.site, e.stations, e.garages, e.alerts.values())
    )


@router.get("/stations", summary="Every charging station: online, free ports, power")
async def stations(service: ServiceDep) -> list[models.Station]:
    site = service.site
    return service.rules.read(
        lambda e: [
            views.station(spec, e.stations[spec.id], e.alerts.values())
            for spec in site.stations.values()
        ]
    )


@router.get(
    "/stations/{station_id}",
    responses=_NOT_FOUND,
    summary="One station with each port's state and, while charging, when it may be free",
)
async def station(service: ServiceDep, station_id: Id) -> models.StationDetail:
    spec = service.site.stations.get(station_id)
    if spec is None:
        raise NotFound(f"no station {station_id}")
    typical, now = service.typical_charge(spec.id), service.now()

    def view(engine: Engine) -> models.StationDetail:
        live = engine.stations[spec.id]
        return views.station_detail(
            spec, live, engine.alerts.values(), typical_charge=typical, now=now
        )

    return service.rules.read(view)


@router.get("/garages", summary="Every garage: capacity, occupancy, free bays")
async def garages(service: ServiceDep) -> list[models.Garage]:
    site = service.site
    return service.rules.read(
        lambda e: [
            views.garage(spec, e.garages[spec.id], e.alerts.values())
            for spec in site.garages.values()
        ]
    )


@router.get(
    "/garages/{garage_id}",
    responses=_NOT_FOUND,
    summary="One garage with its gates' state and last events",
)
async def garage(service: ServiceDep, garage_id: Id) -> models.GarageDetail:
    spec = service.site.garages.get(garage_id)
    if spec is None:
        raise NotFound(f"no garage {garage_id}")
    return service.rules.read(
        lambda e: views.garage_detail(spec, e.garages[spec.id], e.alerts.values())
    )
