"""A station removed from the site file (decommissioned): its saved state and open alerts are
closed with a reason at the next start, and the service runs."""

import json
import time
import uuid
from pathlib import Path

from facilities.mosquitto import PrivateBroker
from tests.conftest import EXAMPLE_SITE, DeviceFactory, query, wait_for
from tests.procs import ServiceProcess

GONE = "cs-20"  # the last station of the example site
WARNING = "SELECT state FROM alerts WHERE subject = ? AND rule = 'over_temperature'"


def _site_without_the_last_station(path: Path) -> Path:
    text = EXAMPLE_SITE.read_text(encoding="utf-8")
    cut = text.index(f'[[station]]\nid = "{GONE}"')
    path.write_text(text[:cut], encoding="utf-8")
    return path


async def test_a_station_removed_from_the_site_is_closed_not_a_crash_loop(
    tmp_path: Path, broker: PrivateBroker, device: DeviceFactory
) -> None:
    db = tmp_path / "facilities.db"
    name = f"shrink-{uuid.uuid4().hex[:6]}"
    first = ServiceProcess(broker.url(), db, client_id=name, log=tmp_path / "first.log")
    first.start()
    try:
        # the cabinet warm enough for a warning (cs-20 warns from 55 °C)
        body = {"seq": 1, "ts": time.time(), "temp_c": 57.0, "ports": []}
        device(GONE).publish_raw(f"facilities/charging/{GONE}/telemetry", json.dumps(body))
        await wait_for(
            lambda: query(db, WARNING, GONE) == [("active",)],
            what="the warning raised",
        )
    finally:
        code, _ = first.terminate()
    assert code == 0
    assert query(db, "SELECT count(*) FROM live_state WHERE device = ?", GONE) == [(1,)]

    smaller = _site_without_the_last_station(tmp_path / "site.toml")
    log = tmp_path / "second.log"
    second = ServiceProcess(broker.url(), db, client_id=name, log=log, site=smaller)
    started = time.time()
    second.start()
    try:
        # the first live-state snapshot after the start comes after five ticks of the rules
        # (the first tick crashed before)
        await wait_for(
            lambda: query(db, "SELECT max(saved_at) FROM live_state")[0][0] > started,  # type: ignore[operator]
            timeout_s=15,
            what="a snapshot after the start",
        )
        assert second.process is not None and second.process.poll() is None, log.read_text()
        assert query(db, WARNING, GONE) == [("cleared",)]
        # every alert of the station is closed (a retained `offline` left on the session
        # broker by another test may have raised one more)
        assert query(db, "SELECT DISTINCT state FROM alerts WHERE subject = ?", GONE) == [
            ("cleared",)
        ]
        assert query(
            db,
            "SELECT e.change, e.detail FROM alert_events e JOIN alerts a ON a.id = e.alert_id"
            " WHERE a.subject = ? AND a.rule = 'over_temperature' ORDER BY e.id",
            GONE,
        ) == [("raised", None), ("cleared", f"{GONE} is no longer in the site file")]
        assert query(db, "SELECT count(*) FROM live_state WHERE device = ?", GONE) == [(0,)]
        assert log.read_text().count(f"{GONE} is no longer in the site file: ") == 1
    finally:
        code, _ = second.terminate()
    assert code == 0
