"""Live copies between the instances of a partitioned district: each publishes its own
devices' live state, retained, and keeps the others' (docs/scaling.md, "Several instances")."""

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection

from facilities.alerts import device_of
from facilities.messages import Accepted
from facilities.mqtt.session import BrokerLink, Delivery
from facilities.mqtt.topics import Topics
from facilities.rules.copies import decode
from facilities.rules.live_state import AlertChanged, DeviceChanged, LiveChange, LiveState

log = logging.getLogger(__name__)

# A round of copies this often: what a resident sees change (a port's state, an alert)
# reaches the other instances within about this long.
ROUND_S = 0.5
# A device whose messages changed only figures (power, energy, temperature, last seen) is
# copied at most this often: a station reports every 10 s (docs/performance.md), so another
# instance shows figures at most one report behind, and a copy (4.7 KB for ten ports,
# docs/scaling.md) is not sent for each of the messages a busy or chatty device sends.
REFRESH_S = 10.0
# Every owned device is copied again this often, whatever changed: what the rules change on
# their own (a device gone silent) with no message and no visible change.
FULL_S = 60.0


class LiveCopies:
    """Publishes a copy of each of this instance's devices that changed (`touched` by ingest,
    `changed` on the change stream), and takes in the copies of the other instances'."""

    def __init__(
        self,
        live: LiveState,
        topics: Topics,
        *,
        owned: Collection[str],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._live = live
        self._topics = topics
        self._link: BrokerLink | None = None
        self._owned = frozenset(owned)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._touched: set[str] = set()
        self._urgent: set[str] = set()
        self._copied_at: dict[str, float] = {}
        self.published = 0
        self.received = 0
        self.refused = 0

    def touched(self, message: Accepted) -> None:
        """A message of one of ours was accepted (paho's thread)."""
        with self._lock:
            self._touched.add(message.route.device)

    def changed(self, change: LiveChange) -> None:
        """Something visible changed (the event loop): copied at the next round."""
        if isinstance(change, DeviceChanged):
            devices = {change.device}
        elif isinstance(change, AlertChanged):
            # the alert's device, and those its actions hold (a garage's smoke: its stations)
            transition = change.transition
            devices = {device_of(transition.alert.subject), *(a.device for a in transition.actions)}
        else:
            return
        with self._lock:
            self._urgent.update(devices & self._owned)

    def on_message(self, topic: str, payload: bytes, _delivery: Delivery) -> None:
        """A copy another instance published (paho's thread; QoS 0: nothing to acknowledge)."""
        device = self._topics.live_copy_device(topic)
        if device is None or device in self._owned or not payload:
            return
        try:
            found = decode(payload)
        except ValueError:
            self.refused += 1
            if self.refused == 1:
                log.warning("live copy on %s not readable (a newer version's?): ignored", topic)
            return
        if found.device != device:
            self.refused += 1
            return
        self.received += 1
        self._live.copy_in(found)

    async def run(self, link: BrokerLink) -> None:
        """Copy every owned device once, then what changed at each round, until cancelled."""
        self._link = link
        full_at = self._monotonic()
        self._publish(self._owned)
        while True:
            await asyncio.sleep(ROUND_S)
            now = self._monotonic()
            if now - full_at >= FULL_S:
                full_at = now
                self._publish(self._owned)
                continue
            with self._lock:
                due = self._urgent | {
                    d for d in self._touched if now - self._copied_at.get(d, 0.0) >= REFRESH_S
                }
                self._urgent.clear()
                self._touched -= due
            self._publish(due)

    def _publish(self, devices: Collection[str]) -> None:
        link = self._link
        if link is None or not link.connected:
            return  # the next full round copies everything again
        now = self._monotonic()
        for device in sorted(devices):
            body = self._live.copy_of(device)
            if body is None:
                continue
            link.publish(self._topics.live_copy(device), body, retain=True)
            self._copied_at[device] = now
            self.published += 1
