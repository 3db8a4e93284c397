"""GET /healthz and GET /metrics."""

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from facilities.api.deps import HealthDep, RegistryDep
from facilities.api.errors import ErrorBody

router = APIRouter(tags=["operations"])


class HealthBody(BaseModel):
    status: str
    broker: str
    database: str


@router.get(
    "/healthz",
    response_model=HealthBody,
    responses={
        503: {
            "model": ErrorBody,
            "description": "broker link or database down, rules tick late, a writer stuck",
        }
    },
    summary="200 while the service can do its safety job; 503 with the reasons",
)
async def healthz(check: HealthDep) -> HealthBody | JSONResponse:
    health = await check()
    if not health.ok:
        return JSONResponse(
            status_code=503,
            content={"error": "unavailable", "detail": "; ".join(health.reasons)},
        )
    # anonymous: no broker address or user name (docs/operations.md, "Health and logs")
    return HealthBody(status="ok", broker="ok", database="ok")


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus text exposition",
    responses={200: {"content": {"text/plain": {}}, "description": "metrics, text format"}},
)
def metrics(registry: RegistryDep) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
