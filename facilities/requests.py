"""What people ask of the service: tokens, gate opens, port power, acknowledgements."""

# A request done returns what was done; one refused raises a `Refusal` (facilities/errors.py),
# which api/errors.py maps to HTTP. Gate opens and power requests are audited whether allowed
# or refused, with the status the client is answered (`http_status`, given by the composition).

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiosqlite

from facilities.access import Person, RateLimiter, Role
from facilities.alerts import Alert, AlertState
from facilities.errors import (
    Conflict,
    DeviceRefused,
    DeviceTimedOut,
    NotAllowed,
    NotFound,
    RateLimited,
    Refusal,
    Unauthenticated,
    Unavailable,
)
from facilities.metrics import ApiMetrics
from facilities.mqtt.commands import CommandSender, Outcome, Result, Target
from facilities.refusals import Refusals
from facilities.rules.live_state import LiveState
from facilities.site import Site
from facilities.store import alerts as alert_store
from facilities.store import audit, people
from facilities.store.db import SharedWriter
from facilities.verdicts import Severity
from facilities.wire import CommandAction

log = logging.getLogger(__name__)


class Authenticator:
    """Bearer token → person, looked up in the database on each request (a new or revoked
    token counts at once). Failures from one address past the limit are 429 instead of 401;
    a valid token is served whatever others sent from the same address (one proxy, one
    office): only failing attempts are limited (docs/api.md, "Who may call what")."""

    def __init__(
        self,
        reader: aiosqlite.Connection,
        *,
        failures: RateLimiter,
        clock: Callable[[], float],
    ) -> None:
        self._reader = reader
        self._failures = failures
        self._clock = clock

    async def person(self, token: str | None, client: str) -> Person:
        found = await people.by_token(self._reader, token) if token else None
        if found is not None:
            return found
        # Checked and counted in one step, with no await in between: of many concurrent
        # failures from one address, exactly the first `limit` are 401 and the rest 429.
        wait = self._failures.retry_after(client)
        self._failures.hit(client)
        if wait is not None:
            raise RateLimited(
                "too many failed authentications from this address", retry_after_s=wait
            )
        raise Unauthenticated(
            "a valid bearer token is required" if token is None else "unknown or revoked token"
        )


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


# What a command came to: done, or refused by its device, or not acknowledged in time. A
# failure is raised to the client, after the audit (and for a gate, kept for its key).
Answer = Done | DeviceRefused | DeviceTimedOut


def _answer(result: Result, done: str) -> Answer:
    """What a command's outcome means to the person who asked (docs/api.md, "Opening a
    gate")."""
    if result.outcome is Outcome.ACKED:
        return Done(result.id, done)
    if result.outcome is Outcome.REFUSED:
        detail = f"{result.target.subject} refused: {result.error or 'no reason given'}"
        return DeviceRefused(detail, command_id=result.id)
    detail = f"{result.target.subject} did not acknowledge in time ({result.tries} tries)"
    return DeviceTimedOut(detail, command_id=result.id)


def _outcome(answer: Answer) -> str:
    return answer.status if isinstance(answer, Done) else answer.error


def _kept(answer: Answer) -> dict[str, Any]:
    """An answer as kept for its Idempotency-Key (the body the client was sent)."""
    if isinstance(answer, Done):
        return {"command_id": answer.command_id, "status": answer.status}
    return {"error": answer.error, "detail": answer.detail, "command_id": answer.command_id}


def _given_again(body: dict[str, Any]) -> Answer:
    """The answer kept for a key, to give again."""
    command_id = str(body["command_id"])
    if body.get("error") == DeviceRefused.error:
        return DeviceRefused(str(body["detail"]), command_id=command_id)
    if body.get("error") == DeviceTimedOut.error:
        return DeviceTimedOut(str(body["detail"]), command_id=command_id)
    return Done(command_id, str(body["status"]))


def _done(answer: Answer) -> Done:
    """The answer, or its refusal raised."""
    if isinstance(answer, Done):
        return answer
    raise answer


class Requests:
    def __init__(
        self,
        site: Site,
        *,
        auth: Authenticator,
        commands: CommandSender,
        live: LiveState,
        writer: SharedWriter,
        reader: aiosqlite.Connection,
        opens: RateLimiter,
        connected: Callable[[], bool],
        clock: Callable[[], float],
        http_status: Callable[[Refusal | None], int],
        refusals: Refusals,
        refusal_rows: RateLimiter,
        metrics: ApiMetrics | None = None,
    ) -> None:
        self.site = site
        self._http_status = http_status
        self._refusals = refusals
        self._refusal_rows = refusal_rows
        self.auth = auth
        self._metrics = metrics
        self._commands = commands
        self._live = live
        self._writer = writer
        self._reader = reader
        self._opens = opens
        self._connected = connected
        self._clock = clock
        # (person, Idempotency-Key) → the gate it is opening and its answer to come
        self._in_flight: dict[tuple[str, str], tuple[str, asyncio.Future[Answer]]] = {}

    # -- residents ---------------------------------------------------------------------------

    async def open_gate(self, ask: Ask, garage: str, gate: str) -> Done:
        """Authorise, rate-limit, replay or send `open`, audit (docs/api.md, "Opening a
        gate"); the token was checked before the request was read."""
        target, person = f"{garage}/{gate}", ask.person
        try:
            spec = self.site.garages.get(garage)
            if spec is None or gate not in spec.gates:
                raise NotFound(f"no gate {target}")
            if not person.may_open(garage):
                raise NotAllowed(f"{person.id} is not registered for {garage}")
            answer, replayed = await self._open_once(person, ask, spec.id, gate)
        except Refusal as refusal:
            await self._audit("gate_open", target, ask, refusal, refusal.error)
            raise
        outcome = "replayed" if replayed else _outcome(answer)
        await self._audit("gate_open", target, ask, answer, outcome, answer.command_id)
        return _done(answer)

    async def _open_once(
        self, person: Person, ask: Ask, garage: str, gate: str
    ) -> tuple[Answer, bool]:
        """Send the open, or give the first answer again for a repeated Idempotency-Key (and
        say so). The key belongs to the request it came with: for another gate it is a 409,
        sending nothing (docs/api.md, "Opening a gate")."""
        key, target = ask.idempotency_key, f"{garage}/{gate}"
        if key is None:
            return await self._send_open(person, garage, gate), False
        first = self._in_flight.get((person.id, key))
        if first is not None:  # the same key, still waiting for its gate
            _reused_for(key, first[0], target)
            return await asyncio.shield(first[1]), True
        # Registered before the first await: a second tap arriving meanwhile waits for this one.
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._in_flight[(person.id, key)] = (target, future)
        try:
            remembered = await audit.remembered(self._reader, person.id, key, now=self._clock())
            if remembered is not None:
                _reused_for(key, remembered.target, target)
                answer = _given_again(remembered.body)
                future.set_result(answer)
                return answer, True
            answer = await self._send_open(person, garage, gate)
            async with self._writer.transaction() as conn:
                kept = audit.Remembered(target, self._status(answer), _kept(answer))
                await audit.remember(conn, person.id, key, kept, now=self._clock())
            future.set_result(answer)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else Unavailable("cancelled"))
            future.exception()  # retrieved: a lone request must not log "never retrieved"
            raise
        finally:
            del self._in_flight[(person.id, key)]
        return answer, False

    async def _send_open(self, person: Person, garage: str, gate: str) -> Answer:
        wait = self._opens.retry_after(person.id)
        if wait is not None:
            raise RateLimited(f"at most {self._opens.limit} opens a minute", retry_after_s=wait)
        if not self._connected():
            raise Unavailable("the service has no link to the broker")
        self._opens.hit(person.id)
        thresholds = self.site.garages[garage].thresholds
        result = await self._commands.send(
            Target(garage, gate=gate),
            CommandAction.OPEN,
            reason="app",
            requested_by=person.id,
            resident=person.id,
            timeout_s=thresholds.command_timeout_s,
            tries=1,  # a second copy would be a late open; the resident may ask again
        )
        return _answer(result, "opened")

    # -- staff -------------------------------------------------------------------------------

    async def power_port(self, ask: Ask, station: str, port: int, *, on: bool) -> Done:
        target, person = f"{station}/{port}", ask.person
        try:
            if person.role is not Role.STAFF:
                raise NotAllowed("staff only")
            spec = self.site.stations.get(station)
            if spec is None or not 1 <= port <= spec.ports:
                raise NotFound(f"no port {target}")
            if on:
                blocking = _blocking_alerts(self._live.open_alerts(), station, port)
                if blocking:
                    raise Conflict(
                        f"acknowledge {', '.join(blocking)} before powering {target} on again"
                    )
                # docs/rules.md, "Desired state": never on while a cut-off rule still fires.
                firing = self._live.firing_cutoffs(station, port)
                if firing:
                    raise Conflict(f"{target} stays off: {', '.join(firing)} still over its limit")
                self._live.release_port(station, port)
            if not self._connected():
                raise Unavailable("the service has no link to the broker")
            if not self._live.reachable(station):
                # docs/rules.md, "Desired state": its broker session would queue the command
                raise Conflict(f"{station} is offline: a command would wait and act late")
            result = await self._commands.send(
                Target(station, port=port),
                CommandAction.POWER_ON if on else CommandAction.POWER_OFF,
                reason="staff",
                requested_by=person.id,
                timeout_s=spec.thresholds.command_timeout_s,
                tries=spec.thresholds.command_tries,
            )
            if not on and result.outcome is not Outcome.ACKED:
                # a cut-off that did not happen must reach a person, whoever asked for it
                self._live.command_failed(result.target.subject)
        except Refusal as refusal:
            await self._audit("port_power", target, ask, refusal, refusal.error)
            raise
        answer = _answer(result, "done")
        await self._audit("port_power", target, ask, answer, result.outcome.value, result.id)
        return _done(answer)

    async def acknowledge(self, staff: Person, alert_id: str) -> Alert:
        """Acknowledge an open alert; 409 when it has cleared, 404 when there is none."""
        alert = self._live.acknowledge(alert_id, staff.id)
        if alert is not None:
            return alert
        state = await alert_store.state_of(self._reader, alert_id)
        if state is None:
            raise NotFound(f"no alert {alert_id}")
        raise Conflict(f"alert {alert_id} is {state}")

    def _status(self, answer: Answer | Refusal) -> int:
        return self._http_status(None if isinstance(answer, Done) else answer)

    async def _audit(
        self,
        action: str,
        target: str,
        ask: Ask,
        answer: Answer | Refusal,
        outcome: str,
        command_id: str | None = None,
    ) -> None:
        """Keep the request, with the status it is answered and what came of it."""
        request = audit.Request(
            at=self._clock(),
            action=action,
            target=target,
            person=ask.person.id,
            client=ask.client,
            status=self._status(answer),
            outcome=outcome,
            detail=None if isinstance(answer, Done) else answer.detail,
            command_id=command_id,
            idempotency_key=ask.idempotency_key,
        )
        if action == "gate_open" and self._metrics is not None:
            self._metrics.gate_opens.labels(outcome).inc()
        person = ask.person.id
        if 400 <= request.status < 500:
            # a token holder's refusals are rows at first, then counted per minute: a leaked
            # or scripted token cannot write a row and a commit per request (docs/api.md)
            if self._refusal_rows.retry_after(person) is not None:
                route = _ROUTES[action]
                self._refusals.refused(ask.client, route, request.status, outcome, person=person)
                return
            self._refusal_rows.hit(person)
        async with self._writer.transaction() as conn:
            await audit.record(conn, request)


# A token holder's refusals (403, 404, 409, 429, …) written as a row each in any minute;
# past it they are counted per minute like refusals without a token. A resident who taps a
# gate they may not open a few times is in the audit request by request; a script with a
# leaked token is a row a minute (measured before: 10 loops wrote 1,121 rows in 10 s).
REFUSAL_ROWS_PER_MINUTE = 10

# How a request's refusals are grouped in the audit: by its route, as refusals without a token.
_ROUTES = {
    "gate_open": "POST /api/garages/{garage}/gates/{gate}/open",
    "port_power": "POST /api/stations/{station_id}/ports/{port}/power",
}


def _reused_for(key: str, first: str | None, target: str) -> None:
    """A key that answered (or is answering) another request is refused, not replayed."""
    if first != target:
        raise Conflict(
            "this Idempotency-Key was used for another request"
            f"{f' ({first})' if first else ''}; use a new key for {target}"
        )


def _blocking_alerts(alerts: Iterable[Alert], station: str, port: int) -> list[str]:
    """Critical alerts of the port or the whole station that nobody has acknowledged yet:
    a port a safety rule switched off stays off until a person has looked."""
    return sorted(
        f"{a.rule} ({a.subject})"
        for a in alerts
        if a.subject in (station, f"{station}/{port}")
        and a.severity is Severity.CRITICAL
        and a.state is AlertState.ACTIVE
    )
