"""At start, before ingest: what the site file no longer names is forgotten, the live state is
loaded from its last snapshot, and what was stored after it is replayed
(docs/architecture.md, "Start-up")."""

import functools
import logging
from collections.abc import Callable
from datetime import datetime

from facilities.rules.engine import Engine, in_site
from facilities.rules.live_state import LiveState
from facilities.rules.runner import RulesRunner
from facilities.site import Site
from facilities.store import alerts as alert_store
from facilities.store import replay, snapshots
from facilities.store.db import SharedWriter
from facilities.store.sql import Connection

log = logging.getLogger(__name__)

# For a snapshot that does not say what it counted last (an older version's, or a device new
# since the last snapshot), what was stored from this long before it is replayed: a message
# is counted within milliseconds of its receive time, 10 s covers a network thread held up
# under load; the saved marks keep most of the overlap from counting twice.
REPLAY_OVERLAP_S = 10.0


async def forget_removed_devices(
    site: Site,
    writer: SharedWriter,
    now: datetime,
    *,
    mine: Callable[[str], bool] | None = None,
) -> None:
    """Devices (or their ports, gates) removed from the site file: close their open alerts
    and drop their saved state, each device logged once (docs/operations.md, "Removing a
    device"). `mine` (`--partition`): only the devices it says are this instance's."""
    devices = {*site.stations, *site.garages}
    async with writer.transaction() as conn:
        forgotten = await alert_store.forget_removed(
            conn, devices=devices, in_site=functools.partial(in_site, site), now=now, mine=mine
        )
    for device, alerts in sorted(forgotten.items()):
        if device in devices:
            log.warning(
                "%s has ports or gates no longer in the site file: %d open alerts cleared",
                device,
                alerts,
            )
        else:
            log.warning(
                "%s is no longer in the site file: %d open alerts cleared, saved state dropped",
                device,
                alerts,
            )


async def load_live_state(live: LiveState, conn: Connection) -> snapshots.Saved:
    """Start `live` from the last snapshot, its open alerts and desired state."""
    saved = await snapshots.load_live_state(conn)
    engine = Engine(
        live.site,
        stations=saved.stations,
        garages=saved.garages,
        alerts=await alert_store.load_open_alerts(conn),
        desired=await snapshots.load_cutoffs(conn),
    )
    live.start(engine)
    return saved


async def replay_stored(
    live: LiveState,
    rules: RulesRunner,
    conn: Connection,
    saved: snapshots.Saved,
    *,
    monotonic: Callable[[], float],
) -> None:
    """Fold in what was stored after the last snapshot (before ingest starts), counting
    nothing twice."""
    started = monotonic()
    site = live.site
    live.restore_marks(saved.marks, saved.counted_until)
    latest = max(saved.saved_at.values(), default=0.0)
    since = {}
    for device in (*site.stations, *site.garages):
        until = saved.counted_until.get(device)
        # a snapshot of an older version, or a device new since: from just before it
        fallback = saved.saved_at.get(device, latest) - REPLAY_OVERLAP_S
        since[device] = until if until is not None else fallback
    stored = await replay.stored_since(conn, since, garages=site.garages)
    counted = live.replay(stored)
    if counted:  # saved at once: a crash loop does not replay more at each start
        await rules.save_state()
    log.info(
        "live state: %d messages stored after the last snapshot replayed in %.2f s",
        counted,
        monotonic() - started,
    )
