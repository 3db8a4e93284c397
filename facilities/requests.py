"""What people ask of the service: gate opens, port power, acknowledgements."""

# A request done returns what was done; one refused raises a `Refusal` (facilities/errors.py),
# which api/errors.py maps to HTTP. Gate opens and power requests are audited whether allowed
# or refused (facilities/request_audit.py).

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace

from facilities import switch_on
from facilities.access import Person, RateLimiter, Role
from facilities.alerts import Alert, device_of
from facilities.answers import (
    Answer,
    Ask,
    Done,
    answer_of,
    done_or_raise,
    given_again,
    kept,
    outcome_of,
)
from facilities.auth import Authenticator
from facilities.errors import (
    Conflict,
    NotAllowed,
    NotFound,
    RateLimited,
    Refusal,
    Unavailable,
)
from facilities.mqtt.commands import CommandSender, Outcome, Target
from facilities.owners import Asked, NotAnswered, Owners
from facilities.partition import Partition
from facilities.request_audit import WRITE_WAIT_S, RequestAudit, within
from facilities.rules.live_state import LiveState
from facilities.site import Site
from facilities.store import alerts as alert_store
from facilities.store import audit
from facilities.store.db import SharedWriter
from facilities.store.sql import Connection
from facilities.wire import CommandAction
from facilities.write_faults import database_fault

log = logging.getLogger(__name__)

# Between tries of storing a key's answer while the database cannot take it: about a minute.
REMEMBER_RETRIES_S = (0.5, 1.0, 2.0, 4.0, *(8.0,) * 6)


class Requests:
    """Gate opens, port power and acknowledgements: each checked, carried out through the
    command sender or the live state, and audited; returns what was done or raises."""

    def __init__(
        self,
        site: Site,
        *,
        auth: Authenticator,
        commands: CommandSender,
        live: LiveState,
        writer: SharedWriter,
        reader: Connection,
        opens: RateLimiter,
        connected: Callable[[], bool],
        clock: Callable[[], float],
        audit: RequestAudit,
        elsewhere: Callable[[str], Partition | None] = lambda _device: None,
        owners: Owners | None = None,
    ) -> None:
        self.site = site
        # `--partition`: the partition of a device another instance owns, which carries out
        # the requests for it (it alone hears the device's acks)
        self._elsewhere = elsewhere
        self._owners = owners
        self.auth = auth
        self.audit = audit
        self._audit = audit.record
        self._status = audit.status
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
        owner = self._elsewhere(garage) if garage in self.site.garages else None
        if owner is not None:
            asked = Asked("gate_open", ask.person, garage, ask.client, ask.idempotency_key, gate)
            timeout_s = self.site.garages[garage].thresholds.command_timeout_s
            return _done(await self._ask_owner(owner, asked, within_s=timeout_s))
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
        outcome = "replayed" if replayed else outcome_of(answer)
        await self._audit("gate_open", target, ask, answer, outcome, answer.command_id)
        if replayed:  # a copy: the first request may still hold the same answer
            answer = given_again(kept(answer))
            if isinstance(answer, Done):
                answer = replace(answer, replayed=True)
            else:
                answer.replayed = True
        return done_or_raise(answer)

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
        in_flight = (person.id, key)
        self._in_flight[in_flight] = (target, future)
        storing: asyncio.Task[None] | None = None
        try:
            remembered = await audit.remembered(self._reader, person.id, key, now=self._clock())
            if remembered is not None:
                _reused_for(key, remembered.target, target)
                answer = given_again(remembered.body)
                future.set_result(answer)
                return answer, True
            answer = await self._send_open(person, garage, gate)
            # The key is answered from memory until its answer is stored: a database that
            # cannot take it now (docs/reliability.md) neither holds the resident's answer
            # up nor lets a repeat of the key open the gate again meanwhile.
            given = audit.Remembered(target, self._status(answer), kept(answer))
            storing = asyncio.create_task(self._remember(person, key, given))
            storing.add_done_callback(lambda _done: self._in_flight.pop(in_flight, None))
            await within(storing, WRITE_WAIT_S)
            # a repeat waiting for it is answered now, after this one: audited in that order
            future.set_result(answer)
        except BaseException as exc:
            if not future.done():
                failed = exc if isinstance(exc, Exception) else Unavailable("cancelled")
                future.set_exception(failed)
                future.exception()  # retrieved: a lone request must not log "never retrieved"
            raise
        finally:
            if storing is None:
                del self._in_flight[in_flight]
        return answer, False

    async def _remember(self, person: Person, key: str, given: audit.Remembered) -> None:
        """Store the answer for the key, trying again while the database cannot take it."""
        for wait_s in (*REMEMBER_RETRIES_S, None):
            try:
                async with self._writer.transaction() as conn:
                    await audit.remember(conn, person.id, key, given, now=self._clock())
                return
            except Exception as exc:
                if not database_fault(exc):
                    raise
                if wait_s is None:
                    log.warning(
                        "the answer to %s's Idempotency-Key was not stored (%s): a repeat of"
                        " the key sends again",
                        person.id,
                        exc,
                    )
                    return
                await asyncio.sleep(wait_s)

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
        return answer_of(result, "opened")

    async def _ask_owner(self, owner: Partition, asked: Asked, *, within_s: float) -> Done | Alert:
        """Have the instance that owns the device carry out the request (it checks, audits
        and answers it as if asked itself): docs/scaling.md, "Requests for another
        instance's devices"."""
        try:
            if self._owners is None:
                raise NotAnswered(f"{asked.device} is served by the instance of partition {owner}")
            return await self._owners.ask(owner, asked, within_s=within_s)
        except NotAnswered as refusal:  # the owner audits what it answered; this, nobody else
            if asked.kind != "acknowledge":
                target = f"{asked.device}/{asked.gate or asked.port}"
                await self._audit(asked.kind, target, asked.ask, refusal, refusal.error)
            raise

    async def carry_out(self, asked: Asked) -> Done | Alert:
        """A request another instance took for one of this instance's devices."""
        owner = self._elsewhere(asked.device)
        if owner is not None:  # never passed on twice: the instances disagree on partitions
            raise Unavailable(
                f"{asked.device} is not served by the instance it was passed to either"
                f" (it says partition {owner}): are the instances' --partition counts the same?"
            )
        match asked.kind:
            case "gate_open":
                return await self.open_gate(asked.ask, asked.device, asked.gate)
            case "port_power":
                return await self.power_port(asked.ask, asked.device, asked.port, on=asked.on)
            case "acknowledge":
                if asked.person.role is not Role.STAFF:
                    raise NotAllowed("staff only")
                return await self.acknowledge(asked.person, asked.alert_id)

    # -- staff -------------------------------------------------------------------------------

    async def power_port(self, ask: Ask, station: str, port: int, *, on: bool) -> Done:
        owner = self._elsewhere(station) if station in self.site.stations else None
        if owner is not None:
            asked = Asked(
                "port_power", ask.person, station, ask.client, ask.idempotency_key, port=port, on=on
            )
            limits = self.site.stations[station].thresholds
            within_s = limits.command_timeout_s * limits.command_tries
            return _done(await self._ask_owner(owner, asked, within_s=within_s))
        target, person = f"{station}/{port}", ask.person
        try:
            if person.role is not Role.STAFF:
                raise NotAllowed("staff only")
            spec = self.site.stations.get(station)
            if spec is None or not 1 <= port <= spec.ports:
                raise NotFound(f"no port {target}")
            if on:
                blocking = self._unacknowledged(station, port)
                if blocking:
                    raise Conflict(
                        f"acknowledge {_listed(blocking)} before powering {target} on again"
                    )
                # docs/rules.md, "Desired state": never on while a cut-off rule still fires.
                firing = switch_on.firing(self._live.firing_cutoffs(station, port))
                if firing:
                    raise Conflict(f"{target} stays off: {_listed(firing)} still over its limit")
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
        answer = answer_of(result, "done")
        await self._audit("port_power", target, ask, answer, result.outcome.value, result.id)
        return done_or_raise(answer)

    def _unacknowledged(self, station: str, port: int) -> list[switch_on.Blocker]:
        cut_by = self._live.cut_by(station).get(port, set())
        return switch_on.unacknowledged(self._live.open_alerts(), station, port, cut_by=cut_by)

    async def acknowledge(self, staff: Person, alert_id: str) -> Alert:
        """Acknowledge an open alert; 409 when it has cleared, 404 when there is none."""
        alert = self._live.acknowledge(alert_id, staff.id)
        if alert is not None:
            return alert
        # an open alert another instance holds (`--partition`): its owner acknowledges it
        copied = self._live.read(
            lambda r: next((a for a in r.alerts.values() if a.id == alert_id), None)
        )
        owner = None if copied is None else self._elsewhere(device_of(copied.subject))
        if copied is not None and owner is not None:
            asked = Asked("acknowledge", staff, copied.device, alert_id=alert_id)
            found = await self._ask_owner(owner, asked, within_s=0.0)
            if not isinstance(found, Alert):
                raise Unavailable(f"the instance of partition {owner} answered no alert")
            return found
        state = await alert_store.state_of(self._reader, alert_id)
        if state is None:
            raise NotFound(f"no alert {alert_id}")
        raise Conflict(f"alert {alert_id} is {state}")


def _done(found: Done | Alert) -> Done:
    if not isinstance(found, Done):
        raise Unavailable("the instance that owns the device answered no command")
    return found


def _reused_for(key: str, first: str | None, target: str) -> None:
    """A key that answered (or is answering) another request is refused, not replayed."""
    if first != target:
        raise Conflict(
            "this Idempotency-Key was used for another request"
            f"{f' ({first})' if first else ''}; use a new key for {target}"
        )


def _listed(blockers: Iterable[switch_on.Blocker]) -> str:
    """`port_over_temperature (cs-07/2), leakage (cs-07)`: the 409's detail."""
    return ", ".join(str(b) for b in blockers)
