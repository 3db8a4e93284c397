"""The live stream: device changes and alerts fanned out to SSE and WebSocket clients."""

# Each client has a bounded queue. Publishing never waits: a client whose queue is full is
# dropped (it gets a `lagged` event and the stream ends; EventSource reconnects on its own and
# the page fetches the state again), so a slow phone never slows ingest or the rules.
# The stream is public: an alert goes out in its public form (what a station's or garage's
# GET shows), and in its full form (who acknowledged it, values, actions) to staff only.

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from facilities.alerts import Transition, alert_payload
from facilities.api import views
from facilities.api.views import alert_brief
from facilities.estimates import Typical
from facilities.rules.live_state import AlertChanged, LiveChange, LiveState
from facilities.site import Site

log = logging.getLogger(__name__)

# Events a client may be behind before it is dropped: a whole-district burst (every port of
# 20 stations changing at once, plus their alerts) is ~300 events.
QUEUE_SIZE = 1000
# A heartbeat this often lets a page tell a quiet district from a dead connection.
HEARTBEAT_S = 10.0

Snapshot = Callable[[str], tuple[str, dict[str, Any]] | None]


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    kind: str  # station, garage, alert, heartbeat; lagged and closing end the stream
    data: str  # JSON, serialised once for every client

    def sse(self) -> str:
        return f"id: {self.id}\nevent: {self.kind}\ndata: {self.data}\n\n"

    def ws(self) -> str:
        return f'{{"id": {self.id}, "event": "{self.kind}", "data": {self.data}}}'


class Subscription:
    def __init__(self, size: int, *, staff: bool = False) -> None:
        self._queue: asyncio.Queue[Event] = asyncio.Queue(size)
        self.staff = staff  # gets the staff form of events that have one
        self.lagged = False

    def offer(self, event: Event) -> bool:
        """Queue an event; False (and the client is marked lagged) when the queue is full."""
        if self.lagged:
            return False
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True
            self.last(Event(event.id, "lagged", '{"reason": "client too slow"}'))
            return False
        return True

    def last(self, event: Event) -> None:
        """Replace whatever waits with one final event (the stream ends after it)."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(event)

    async def next(self, timeout_s: float) -> Event | None:
        """The next event, or None when none came within `timeout_s`."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        try:
            return await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            return None


class LiveFeed:
    """Told by the live state's change stream what changed; builds each event once; offers
    it to every subscriber without waiting."""

    def __init__(self, snapshot: Snapshot, *, queue_size: int = QUEUE_SIZE) -> None:
        self._snapshot = snapshot
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._ids = itertools.count(1)
        self.dropped = 0
        self._closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @contextlib.contextmanager
    def subscribe(self, *, staff: bool = False) -> Iterator[Subscription]:
        """A client's subscription; `staff`: a staff token came with it."""
        subscription = Subscription(self._queue_size, staff=staff)
        if self._closed:
            subscription.last(self._closing())
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    def changed(self, change: LiveChange) -> None:
        """A subscriber of the live state's change stream."""
        if isinstance(change, AlertChanged):
            self.alert_changed(change.transition)
        else:
            self.device_changed(change.device)

    def device_changed(self, device: str) -> None:
        if not self._subscribers:
            return  # nobody listens: not even the snapshot is built
        found = self._snapshot(device)
        if found is not None:
            kind, body = found
            self.publish(kind, body)

    def alert_changed(self, transition: Transition) -> None:
        if self._subscribers:
            brief = alert_brief(transition.alert).model_dump(mode="json")
            public = {**brief, "change": transition.change.value}
            self.publish("alert", public, staff_body=alert_payload(transition))
            # what residents see of a device depends on its open alerts too (a garage's
            # smoke warning stays until its alert clears, with no message from the garage)
            self.device_changed(transition.alert.device)

    def publish(
        self, kind: str, body: dict[str, Any], *, staff_body: dict[str, Any] | None = None
    ) -> None:
        """Offer an event to every subscriber: `body` to all, or `staff_body` (the same event
        id) instead to staff subscribers when there is one."""
        event = Event(next(self._ids), kind, json.dumps(body, ensure_ascii=False))
        staff_event = event
        if staff_body is not None:
            staff_event = Event(event.id, kind, json.dumps(staff_body, ensure_ascii=False))
        for subscription in list(self._subscribers):
            if not subscription.offer(staff_event if subscription.staff else event):
                self._subscribers.discard(subscription)
                self.dropped += 1
                log.info("live stream: dropped a client %d events behind", self._queue_size)

    def close(self) -> None:
        """The service is stopping: end every stream now (clients reconnect to the next
        instance), rather than leave the HTTP server waiting for them."""
        self._closed = True
        for subscription in self._subscribers:
            subscription.last(self._closing())

    def _closing(self) -> Event:
        return Event(next(self._ids), "closing", '{"reason": "service stopping"}')

    def heartbeat(self, at: str) -> Event:
        return Event(next(self._ids), "heartbeat", json.dumps({"at": at}))


def device_bodies(
    site: Site,
    live: LiveState,
    *,
    estimates: Callable[[str], Typical],
    now: Callable[[], datetime],
) -> Snapshot:
    """What the live stream sends when a device changed: the same body as its GET."""

    def body(device: str) -> tuple[str, dict[str, Any]] | None:
        if device in site.stations:
            spec = site.stations[device]
            typical, at = estimates(device), now()
            station = live.station(
                device,
                lambda state, alerts: views.station_detail(
                    spec, state, alerts, typical=typical, now=at
                ),
            )
            return "station", station.model_dump(mode="json")
        if device in site.garages:
            gspec = site.garages[device]
            garage = live.garage(
                device, lambda state, alerts: views.garage_detail(gspec, state, alerts)
            )
            return "garage", garage.model_dump(mode="json")
        return None

    return body
