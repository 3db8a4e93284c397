"""Dependencies shared by the routes."""

from typing import Annotated

from fastapi import Depends, Request

from facilities.app import Service


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
