"""The commands the rules ask for: each started as a task of the runner, awaited, confirmed
or failed in the live state; re-asserted quietly; kept in the outbox at a stop."""

import asyncio
import logging
import uuid
from collections import Counter
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
        # the rules' commands awaiting their ack: from their start until the ack is heard (not
        # until their outcome is written) or their tries run out
        self._awaiting: Counter[Action] = Counter()
        self._quiet_until: dict[Action, datetime] = {}  # failed: not re-asserted before

    def bind(self, tasks: asyncio.TaskGroup | None) -> None:
        """The task group commands start in (None: the runner stopped)."""
        self._tasks = tasks

    def inflight(self) -> list[Queued]:
        return list(self._inflight.values())

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
        if again and self._awaiting[action]:
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
        self._awaiting[wanted] += 1
        name = f"command-{queued.action}-{queued.device}"
        self._tasks.create_task(self._command(queued, wanted), name=name)
        return queued

    async def _command(self, queued: Queued, wanted: Action) -> None:
        target = Target(queued.device, port=queued.port, gate=queued.gate)
        site = self._live.site
        spec = site.stations.get(target.device) or site.garages.get(target.device)
        thresholds = spec.thresholds if spec else site.thresholds
        awaiting = True

        def answered(ack: CommandAck) -> None:
            # As the ack is heard, before its outcome is written: a report the device sent
            # after it (a reboot, the port on again) is judged against a command answered,
            # and its cut-off is asserted again rather than taken for this one's repeat.
            nonlocal awaiting
            awaiting = False
            self._awaiting[wanted] -= 1
            if ack.ok:
                self._quiet_until.pop(wanted, None)
                self._live.confirm(wanted)
            else:
                self._quiet_until[wanted] = self._clock() + timedelta(seconds=RESEND_QUIET_S)

        try:
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
        finally:
            if awaiting:  # no ack: its tries ran out, or the runner stopped
                self._awaiting[wanted] -= 1
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
