"""Live copies between the instances of a partitioned district: each publishes its own
devices' live state, retained, and keeps the others' (docs/scaling.md, "Several instances")."""

import asyncio
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Sequence

from facilities.alerts import device_of
from facilities.messages import Accepted
from facilities.mqtt.session import BrokerLink, Delivery
from facilities.mqtt.topics import Topics
from facilities.partition import Partition, unit_of
from facilities.rules.copies import decode
from facilities.rules.live_state import AlertChanged, DeviceChanged, LiveChange, LiveState
from facilities.site import Site

log = logging.getLogger(__name__)

# A round of copies this often: what a resident sees change (a port's state, an alert)
# reaches the other instances within about this long.
ROUND_S = 0.5
# A device whose messages changed only figures (power, energy, temperature, last seen) is
# copied at most this often: a station reports every 10 s (docs/performance.md), so another
# instance shows figures at most one report behind, and a copy (4.7 KB for ten ports,
# docs/scaling.md) is not sent for each of the messages a busy or chatty device sends.
REFRESH_S = 10.0
# Every owned device is copied again within this long, whatever changed: what the rules
# change on their own (a device gone silent) with no message and no visible change.
FULL_S = 60.0
# Copies encoded between two turns of the event loop: ~70 µs each (docs/scaling.md), so
# the loop waits at most ~15 ms.
YIELD_EVERY = 200


class LiveCopies:
    """Publishes a copy of each of this instance's devices that changed (`touched` by ingest,
    `changed` on the change stream), and takes in the copies of the other instances'."""

    def __init__(
        self,
        live: LiveState,
        topics: Topics,
        *,
        partition: Partition,
        site: Site,
        owned: Collection[str],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._live = live
        self._partition = partition
        self._site = site
        self._topics = topics
        self._link: BrokerLink | None = None
        self._owned = frozenset(owned)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._touched: set[str] = set()
        self._gone: set[int] = set()  # other partitions whose instance said offline
        self._online: set[int] = set()  # those whose instance said online at least once
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
        """A copy another instance published, or another partition's status (paho's thread;
        QoS 0: nothing to acknowledge)."""
        status = self._topics.status_partition(topic)
        if status is not None:
            self._status(status, payload)
            return
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
        if self._partition.of_key(unit_of(self._site, device)) in self._gone:
            # a copy retained from before its owner went: shown offline all the same
            self._live.owner_gone(lambda d: d == device)

    def running(self, index: int) -> bool:
        """Whether partition `index`'s instance is running: it said `online` (with the same
        number of partitions) and has not said `offline` since."""
        return index in self._online and index not in self._gone

    def _status(self, slug: str, payload: bytes) -> None:
        """Partition `slug` (`1-of-2`) said `online` or `offline` (its Last Will, or a clean
        stop). Offline, no instance watches its devices: their copies are shown offline until
        it, or its standby, is back and copies them again."""
        index, _, count = slug.partition("-of-")
        if not (index.isdigit() and count.isdigit()) or int(count) != self._partition.count:
            return  # a status from before the partitions changed
        other = Partition(int(index), self._partition.count)
        if other == self._partition:
            return
        if payload != b"offline":
            self._gone.discard(other.index)
            self._online.add(other.index)
            return
        if other.index not in self._gone:
            log.warning(
                "partition %s is offline: its devices shown offline until it is back", other
            )
        self._gone.add(other.index)
        self._live.owner_gone(functools.partial(other.owns, self._site))

    async def run(self, link: BrokerLink) -> None:
        """Copy every owned device once, then at each round what changed and a slice of the
        rest (all of them within FULL_S), until cancelled."""
        self._link = link
        owned = sorted(self._owned)
        await self._publish(owned)
        # a slice a round: never the whole partition at once (15,000 stations: ~1 s of
        # encoding on the event loop, 70 MB for the broker)
        per_round = max(1, math.ceil(len(owned) * ROUND_S / FULL_S))
        next_slice = 0
        while True:
            await asyncio.sleep(ROUND_S)
            now = self._monotonic()
            with self._lock:
                due = self._urgent | {
                    d for d in self._touched if now - self._copied_at.get(d, 0.0) >= REFRESH_S
                }
                self._urgent.clear()
                self._touched -= due
            due.update(owned[next_slice : next_slice + per_round])
            next_slice = next_slice + per_round if next_slice + per_round < len(owned) else 0
            await self._publish(sorted(due))

    async def _publish(self, devices: Sequence[str]) -> None:
        link = self._link
        if link is None or not link.connected:
            return  # the rounds copy every device again within FULL_S
        now = self._monotonic()
        for n, device in enumerate(devices, 1):
            body = self._live.copy_of(device)
            if body is not None:
                link.publish(self._topics.live_copy(device), body, retain=True)
                self._copied_at[device] = now
                self.published += 1
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # the ingest writer and HTTP between two hundred
