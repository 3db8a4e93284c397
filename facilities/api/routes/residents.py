"""The garage-access app: open a gate, and who am I."""

from typing import Annotated

from fastapi import APIRouter, Header, Path, Response

from facilities.api import models
from facilities.api.deps import AskDep, PersonDep, RequestsDep, SiteDep, TokenFirst
from facilities.api.errors import INVALID, REPLAYED, command_refusal, refusal

router = APIRouter(prefix="/api", tags=["residents"], responses=INVALID, route_class=TokenFirst)

Id = Annotated[str, Path(max_length=64)]


@router.post(
    "/garages/{garage}/gates/{gate}/open",
    response_model=models.CommandResult,
    summary="Open a gate for the resident (waits for the gate's ack)",
    responses={
        401: refusal("no valid token"),
        403: refusal("the resident is not registered for this garage"),
        404: refusal("unknown garage or gate"),
        409: refusal("the Idempotency-Key was used for another garage or gate"),
        429: refusal("too many opens, or too many failed authentications (see Retry-After)"),
        502: command_refusal("the gate refused (its reason in `detail`)"),
        503: refusal("no link to the broker"),
        504: command_refusal("the gate did not acknowledge in time"),
    },
)
async def open_gate(
    requests: RequestsDep,
    ask: AskDep,
    response: Response,
    garage: Id,
    gate: Id,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=128,
            description="a retried request with the same key (within 24 h) gets the first "
            "answer again and opens nothing; the key for another gate is a 409",
        ),
    ] = None,
) -> models.CommandResult:
    del idempotency_key  # read by AskDep; declared here for validation and the docs
    done = await requests.open_gate(ask, garage, gate)
    if done.replayed:
        response.headers[REPLAYED] = "true"
    return models.CommandResult(command_id=done.command_id, status=done.status)


@router.get(
    "/me",
    summary="The person the token belongs to, and the garages they may open",
    responses={401: refusal("no valid token"), 429: refusal("too many failed authentications")},
)
async def me(site: SiteDep, person: PersonDep) -> models.Me:
    garages = [
        models.MeGarage(
            id=g.id,
            name=g.name,
            name_en=g.name_en,
            gates=list(g.gates),
            gate_names=[
                models.GateName(gate=n.id, name=n.name, name_en=n.name_en)
                for n in map(g.gate_name, g.gates)
            ],
        )
        for g in site.garages.values()
        if g.id in person.garages
    ]
    return models.Me(id=person.id, name=person.name, role=person.role.value, garages=garages)
