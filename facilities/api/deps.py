"""Dependencies shared by the routes: the service, who is asking (token first), paging."""

import ipaddress
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from facilities.access import Person, Role
from facilities.api.errors import http_status
from facilities.errors import NotAllowed, RateLimited, Unauthenticated
from facilities.requests import Ask
from facilities.service import Service

bearer = HTTPBearer(
    auto_error=False,
    description="a token printed by `facilities residents add` or `facilities staff add`",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def client_address(connection: HTTPConnection) -> str:
    """The client's address: the socket's peer, or what a `--trusted-proxy` forwarded. Only
    an IP address is believed (it keys the failed-authentication limit and is audited);
    anything else a proxy passed on is `invalid`."""
    host = connection.client.host if connection.client else ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return "invalid" if host else "unknown"


def bearer_token(connection: HTTPConnection) -> str | None:
    """The token of `Authorization: Bearer …`; another scheme, or none, is no token."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def authenticate(connection: HTTPConnection, route: str) -> Person:
    """The person whose token came with the request; a refusal (401, 429) is counted and
    audited in aggregate under `route` (`Service.refusals`)."""
    service: Service = connection.app.state.service
    client = client_address(connection)
    try:
        return await service.requests.auth.person(bearer_token(connection), client)
    except (Unauthenticated, RateLimited) as refusal:
        service.refusals.refused(client, route, http_status(refusal), refusal.error)
        raise


class TokenFirst(APIRoute):
    """A route that needs a token: the token is checked before the request's body is read,
    parsed or validated, so that a caller without a valid one costs a hash and a lookup,
    never a parse (docs/api.md, "Who may call what"). Refusals of this kind are counted
    and audited in aggregate (`Service.refusals`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        route = f"{','.join(sorted(self.methods or ()))} {self.path}"

        async def authenticated(request: Request) -> Response:
            request.state.person = await authenticate(request, route)
            return await handler(request)

        return authenticated


def current_person(request: Request, _credentials: Credentials) -> Person:
    """The person TokenFirst found (`_credentials`: the bearer scheme in the OpenAPI)."""
    person: Person = request.state.person
    return person


PersonDep = Annotated[Person, Depends(current_person)]


def current_staff(person: PersonDep) -> Person:
    if person.role is not Role.STAFF:
        raise NotAllowed("staff only")
    return person


StaffDep = Annotated[Person, Depends(current_staff)]


def get_ask(request: Request, person: PersonDep) -> Ask:
    key = request.headers.get("Idempotency-Key")
    return Ask(person, client_address(request), key)


AskDep = Annotated[Ask, Depends(get_ask)]
