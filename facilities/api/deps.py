"""What routes depend on: the site, the live state, requests, the history reader, the clock,
who is asking (token first). Only this module knows where they come from."""

import ipaddress
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from starlette.requests import HTTPConnection

from facilities.access import Person, Role
from facilities.answers import Ask
from facilities.api.errors import http_status
from facilities.api.live import LiveFeed
from facilities.errors import NotAllowed, RateLimited, Unauthenticated
from facilities.estimates import Typical
from facilities.health import Health
from facilities.metrics import ApiMetrics
from facilities.refusals import Refusals
from facilities.requests import Requests
from facilities.rules.live_state import LiveState
from facilities.settings import Listen
from facilities.site import Site
from facilities.store.sql import Connection

bearer = HTTPBearer(
    auto_error=False,
    description="a token printed by `facilities residents add` or `facilities staff add`",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """What the HTTP app reads, each one thing, wired once by the service's composition
    (facilities/service.py). A route depends on the few it needs, never on all of them."""

    site: Site
    live: LiveState
    requests: Requests
    history: Connection  # reads only (WAL lets it read while ingest writes)
    now: Callable[[], datetime]  # the service's steady clock (tests move it)
    estimates: Callable[[str], Typical]  # what a full charge typically takes at a station
    health: Callable[[], Awaitable[Health]]
    registry: CollectorRegistry
    refusals: Refusals
    metrics: ApiMetrics
    feed: LiveFeed
    listen: Listen
    public_url: str | None  # what QR codes print (None: the listen address)
    cors_origins: tuple[str, ...] = ()  # browser apps' origins allowed to call (none: off)


def services_of(connection: HTTPConnection) -> Services:
    services: Services = connection.app.state.services
    return services


def get_site(request: Request) -> Site:
    return services_of(request).site


def get_live(request: Request) -> LiveState:
    return services_of(request).live


def get_requests(request: Request) -> Requests:
    return services_of(request).requests


def get_history(request: Request) -> Connection:
    """The history reader: a read-only connection (WAL lets it read while ingest writes)."""
    return services_of(request).history


def get_now(request: Request) -> datetime:
    """The service's time now (its steady clock: tests move it)."""
    return services_of(request).now()


def get_estimates(request: Request) -> Callable[[str], Typical]:
    """What a full charge typically takes at a station, for its ports' estimates."""
    return services_of(request).estimates


def get_clock(connection: HTTPConnection) -> Callable[[], datetime]:
    """The service's clock, for a stream that outlives its request (heartbeats)."""
    return services_of(connection).now


def get_health(request: Request) -> Callable[[], Awaitable[Health]]:
    return services_of(request).health


def get_registry(request: Request) -> CollectorRegistry:
    return services_of(request).registry


def get_feed(connection: HTTPConnection) -> LiveFeed:
    return services_of(connection).feed


SiteDep = Annotated[Site, Depends(get_site)]
LiveDep = Annotated[LiveState, Depends(get_live)]
RequestsDep = Annotated[Requests, Depends(get_requests)]
HistoryDep = Annotated[Connection, Depends(get_history)]
NowDep = Annotated[datetime, Depends(get_now)]
EstimatesDep = Annotated[Callable[[str], Typical], Depends(get_estimates)]
ClockDep = Annotated[Callable[[], datetime], Depends(get_clock)]
HealthDep = Annotated[Callable[[], Awaitable[Health]], Depends(get_health)]
RegistryDep = Annotated[CollectorRegistry, Depends(get_registry)]


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
    audited in aggregate under `route` (`Services.refusals`)."""
    services = services_of(connection)
    client = client_address(connection)
    try:
        return await services.requests.auth.person(bearer_token(connection), client)
    except (Unauthenticated, RateLimited) as refusal:
        services.refusals.refused(client, route, http_status(refusal), refusal.error)
        raise


class TokenFirst(APIRoute):
    """A route that needs a token: the token is checked before the request's body is read,
    parsed or validated, so that a caller without a valid one costs a hash and a lookup,
    never a parse (docs/api.md, "Who may call what"). Refusals of this kind are counted
    and audited in aggregate (`Services.refusals`)."""

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
