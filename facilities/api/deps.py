"""Dependencies shared by the routes: the service, who is asking, paging."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facilities.access import Person
from facilities.app import Service
from facilities.operations import Ask

bearer = HTTPBearer(
    auto_error=False,
    description="a token printed by `facilities residents add` or `facilities staff add`",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def get_ask(request: Request, credentials: Credentials) -> Ask:
    key = request.headers.get("Idempotency-Key")
    return Ask(credentials.credentials if credentials else None, client_address(request), key)


AskDep = Annotated[Ask, Depends(get_ask)]


async def current_person(service: ServiceDep, ask: AskDep) -> Person:
    return await service.operations.auth.person(ask.token, ask.client)


async def current_staff(service: ServiceDep, ask: AskDep) -> Person:
    return await service.operations.auth.staff(ask.token, ask.client)


PersonDep = Annotated[Person, Depends(current_person)]
StaffDep = Annotated[Person, Depends(current_staff)]
