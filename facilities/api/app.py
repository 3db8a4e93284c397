"""The FastAPI app: routes, error mapping, and a lifespan that can run the service."""

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from facilities import __version__
from facilities.api.errors import install_error_handlers
from facilities.api.routes import health
from facilities.app import Service


def create_app(service: Service, *, run_service: bool = True) -> FastAPI:
    """The HTTP app over `service`. With `run_service`, its lifespan starts and stops the
    service (tests, embedding); `facilities run` starts the service itself first, so that
    an unreachable broker is one line on stderr instead of a failed lifespan."""

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
        lifespan=lifespan,
    )
    app.state.service = service
    install_error_handlers(app)
    app.include_router(health.router)
    return app
