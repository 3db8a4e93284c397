"""The HTTP answer of a standby instance (`--partition K/N` while another owns K): 503 with
`standby` for every path, and its metrics (docs/scaling.md, "Failover")."""

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from facilities.partition import Partition


def create_standby_app(partition: Partition) -> FastAPI:
    """An app that says, on every path, that this instance waits to own `partition`: a
    load balancer's health check sends nobody here, and Prometheus sees the standby."""
    registry = CollectorRegistry()
    Gauge(
        "facilities_partition_standby",
        "1 while this instance waits for another to give up its partition",
        ["partition"],
        registry=registry,
    ).labels(str(partition)).set(1)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    detail = f"standby for partition {partition}: another instance owns it"

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "DELETE"])
    def standby(request: Request, path: str) -> JSONResponse:
        return JSONResponse(
            status_code=503,
            content={"error": "standby", "detail": detail},
            headers={"Retry-After": "1"},
        )

    return app
