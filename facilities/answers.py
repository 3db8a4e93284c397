"""A request as it is asked (`Ask`) and what it comes to: done, or a device's refusal or
silence, raised to the client after the audit (and for a gate, kept for its key)."""

from dataclasses import dataclass
from typing import Any

from facilities.access import Person
from facilities.errors import DeviceRefused, DeviceTimedOut
from facilities.mqtt.commands import Outcome, Result


@dataclass(frozen=True, slots=True)
class Ask:
    """One request: who (already authenticated), from where, with which Idempotency-Key."""

    person: Person
    client: str
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """A command carried out: its id, and `opened` (a gate) or `done` (port power)."""

    command_id: str
    status: str
    replayed: bool = False  # the answer kept for a repeated Idempotency-Key, given again


# What a command came to: done, or refused by its device, or not acknowledged in time. A
# failure is raised to the client, after the audit (and for a gate, kept for its key).
Answer = Done | DeviceRefused | DeviceTimedOut


def answer_of(result: Result, done: str) -> Answer:
    """What a command's outcome means to the person who asked (docs/api.md, "Opening a
    gate")."""
    if result.outcome is Outcome.ACKED:
        return Done(result.id, done)
    if result.outcome is Outcome.REFUSED:
        detail = f"{result.target.subject} refused: {result.error or 'no reason given'}"
        return DeviceRefused(detail, command_id=result.id)
    detail = f"{result.target.subject} did not acknowledge in time ({result.tries} tries)"
    return DeviceTimedOut(detail, command_id=result.id)


def outcome_of(answer: Answer) -> str:
    return answer.status if isinstance(answer, Done) else answer.error


def kept(answer: Answer) -> dict[str, Any]:
    """An answer as kept for its Idempotency-Key (the body the client was sent)."""
    if isinstance(answer, Done):
        return {"command_id": answer.command_id, "status": answer.status}
    return {"error": answer.error, "detail": answer.detail, "command_id": answer.command_id}


def given_again(body: dict[str, Any]) -> Answer:
    """The answer kept for a key, to give again."""
    command_id = str(body["command_id"])
    if body.get("error") == DeviceRefused.error:
        return DeviceRefused(str(body["detail"]), command_id=command_id)
    if body.get("error") == DeviceTimedOut.error:
        return DeviceTimedOut(str(body["detail"]), command_id=command_id)
    return Done(command_id, str(body["status"]))


def done_or_raise(answer: Answer) -> Done:
    """The answer, or its refusal raised."""
    if isinstance(answer, Done):
        return answer
    raise answer
