"""The commands the rules ask for: each started as a task of the runner, awaited, confirmed
or failed in the live state; re-asserted quietly; kept in the outbox at a stop."""

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from facilities.alerts import Alert
from facilities.mqtt.commands import CommandSender, Outcome, Target
from facilities.rules.live_state import LiveState
from facilities.store.commands import Queued
from facilities.verdicts import Action, ActionKind
from facilities.wire import CommandAck, CommandAction

log = logging.getLogger(__name__)

# A cut-off the device refused or never acked is not re-asserted on each of its messages
# (every 10 s, docs/protocol.md) but once a minute: command_failed already calls a person.
RESEND_QUIET_S = 60.0

_COMMANDS = {
    ActionKind.POWER_OFF_PORT: CommandAction.POWER_OFF,
    ActionKind.POWER_OFF_STATION: CommandAction.POWER_OFF,
    ActionKind.OPEN_GATE: CommandAction.OPEN,
}


class RuleCommands:
    """The rules' commands in flight: started in the runner's task group (`bind`), one task
    each; what is not finished at a stop is `inflight`, for the outbox."""

    def __init__(
        self, live: LiveState, commands: CommandSender, *, clock: Callable[[], datetime]
    ) -> None:
        self._live = live
        self._commands = commands
        self._clock = clock
        self._tasks: asyncio.TaskGroup | None = None
        # The rules' commands started and not finished: kept in the outbox at a stop.
        self._inflight: dict[str, Queued] = {}
        # The rules' commands awaiting their ack, by id: from their start until paho's thread
        # hears the ack (not until the outcome is written), their tries run out, or they end.
        # Read by the live state on paho's thread: under a lock of its own.
        self._awaiting: dict[str, Action] = {}
        self._awaiting_lock = threading.Lock()
        live.awaits = self.awaits
        commands.heard = self._heard
        self._quiet_until: dict[Action, datetime] = {}  # failed: not re-asserted before

    def bind(self, tasks: asyncio.TaskGroup | None) -> None:
        """The task group commands start in (None: the runner stopped)."""
        self._tasks = tasks

    def inflight(self) -> list[Queued]:
        return list(self._inflight.values())

    def awaits(self, action: Action) -> bool:
        """Whether a command for `action` awaits its device's ack (any thread)."""
        with self._awaiting_lock:
            return action in self._awaiting.values()

    def _heard(self, device: str, gate: str | None, ack: CommandAck) -> None:
        """An ack heard, on paho's thread, in the order of the device's messages: what the
        device reports after it is judged against a command carried out. A refusal stays
        awaiting until the event loop has set its quiet time (`answered`)."""
        if not ack.ok:
            return
        with self._awaiting_lock:
            wanted = self._awaiting.get(ack.id)
            if wanted is not None and (wanted.device, wanted.gate) == (device, gate):
                del self._awaiting[ack.id]
                self._quiet_until.pop(wanted, None)

    def _settled(self, command_id: str) -> None:
        with self._awaiting_lock:
            self._awaiting.pop(command_id, None)

    def waiting(self) -> set[str]:
        """Ids of the commands that await an ack now (any sender's)."""
        return self._commands.waiting()

    def resend(self, queued: Queued) -> None:
        """Send a command of the outbox again (same id: the device dedups)."""
        self._start(queued, _wanted(queued))

    def start_for(
        self, action: Action, alert: Alert, *, cause: str | None, again: bool = False
    ) -> Queued | None:
        """Send what a rule asks for, unless the device is known offline: its broker session
        would queue the command and deliver it late; it stays in the desired state and is
        sent when the device is back. `again`: a cut-off re-asserted, not while the same
        command awaits its ack, nor for a while after it failed. `cause`: the device message
        that made it due, kept in the audit (None: the server's clock)."""
        if again and self.awaits(action):
            return None  # a first cut may repeat another alert's: each is audited with its alert
        now = self._clock()
        if again and now < self._quiet_until.get(action, now):
            return None
        if not self._live.reachable(action.device):
            log.warning("%s %s deferred: the device is offline", action.kind, action.device)
            return None
        return self._start(queued_for(action, alert, cause), action)

    def _start(self, queued: Queued, wanted: Action) -> Queued:
        if self._tasks is None:
            raise RuntimeError("the rules runner is not running")
        self._inflight[queued.id] = queued
        with self._awaiting_lock:
            self._awaiting[queued.id] = wanted
        name = f"command-{queued.action}-{queued.device}"
        task = self._tasks.create_task(self._command(queued, wanted), name=name)
        # however it ends, even cancelled before it ran
        task.add_done_callback(lambda _task: self._settled(queued.id))
        return queued

    async def _command(self, queued: Queued, wanted: Action) -> None:
        target = Target(queued.device, port=queued.port, gate=queued.gate)
        site = self._live.site
        spec = site.stations.get(target.device) or site.garages.get(target.device)
        thresholds = spec.thresholds if spec else site.thresholds

        def answered(ack: CommandAck) -> None:
            # On the event loop as the ack resolves the command, before its outcome is
            # written (paho's thread already took an ok one out of `_awaiting` and ended its
            # quiet time: `_heard`).
            if ack.ok:
                self._live.confirm(wanted)
            else:  # quiet first, then no longer awaiting: nothing is sent in between
                self._quiet_until[wanted] = self._clock() + timedelta(seconds=RESEND_QUIET_S)
            self._settled(queued.id)

        result = await self._commands.send(
            target,
            CommandAction(queued.action),
            reason=queued.reason,
            alert_id=queued.alert_id,
            timeout_s=thresholds.command_timeout_s,
            tries=thresholds.command_tries,
            command_id=queued.id,
            cause=queued.cause,
            on_ack=answered,
        )
        self._settled(queued.id)  # no ack came: its tries ran out
        del self._inflight[queued.id]  # not when cancelled: a stop keeps it in the outbox
        if result.outcome is Outcome.ACKED:
            return
        self._quiet_until[wanted] = self._clock() + timedelta(seconds=RESEND_QUIET_S)
        # not carried out (no ack after its tries, or refused): raise `command_failed`, or
        # raise it again after an acknowledgement
        self._live.command_failed(target.subject)


def queued_for(action: Action, alert: Alert, cause: str | None) -> Queued:
    """A rules' command for `action`, with a fresh id."""
    command = _COMMANDS[action.kind]
    return Queued(
        uuid.uuid4().hex,
        action.device,
        action.port,
        action.gate,
        command,
        alert.rule,
        alert.id,
        cause,
    )


def _wanted(queued: Queued) -> Action:
    """The rule's action a command of the outbox carries out."""
    if queued.gate is not None:
        return Action(ActionKind.OPEN_GATE, queued.device, gate=queued.gate)
    if queued.port is not None:
        return Action(ActionKind.POWER_OFF_PORT, queued.device, port=queued.port)
    return Action(ActionKind.POWER_OFF_STATION, queued.device)
