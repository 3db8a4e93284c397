"""A station removed from the site file (decommissioned): its saved state and open alerts are
closed with a reason at the next start, and the service runs."""

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from facilities.mosquitto import PrivateBroker
from tests.support.db import query
from tests.support.devices import DeviceFactory
from tests.support.paths import EXAMPLE_SITE
from tests.support.poll import wait_for
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

GONE = "cs-20"  # the last station of the example site
SHRUNK = "cs-19"  # loses its ports 9 and 10
WARNING = "SELECT state FROM alerts WHERE subject = ? AND rule = 'over_temperature'"
FAULT = "SELECT state FROM alerts WHERE subject = ? AND rule = 'device_fault'"


def _smaller_site(path: Path) -> Path:
    """The example site without its last station, and with 8 ports instead of 10 at SHRUNK."""
    text = EXAMPLE_SITE.read_text(encoding="utf-8")
    text = text[: text.index(f'[[station]]\nid = "{GONE}"')]
    at = text.index(f'id = "{SHRUNK}"')
    ports = text.index("ports = 10", at)
    text = text[:ports] + "ports = 8" + text[ports + len("ports = 10") :]
    path.write_text(text, encoding="utf-8")
    return path


def _ports(service: ServiceProcess, station: str) -> list[int]:
    body = httpx.get(f"http://127.0.0.1:{service.port}/api/stations/{station}", timeout=5).json()
    return [int(p["port"]) for p in body["ports"]]


async def test_a_station_removed_from_the_site_is_closed_not_a_crash_loop(
    tmp_path: Path, broker: PrivateBroker, device: DeviceFactory, store_target: str
) -> None:
    db = store_target
    name = f"shrink-{uuid.uuid4().hex[:6]}"
    first = ServiceProcess(broker, db, client_id=name, log=tmp_path / "first.log")
    first.start()
    try:
        # the cabinet warm enough for a warning (cs-20 warns from 55 °C)
        body = {"seq": 1, "ts": time.time(), "temp_c": 57.0, "ports": []}
        device(GONE).publish_raw(f"facilities/charging/{GONE}/telemetry", json.dumps(body))
        await wait_for(
            lambda: query(db, WARNING, GONE) == [("active",)],
            what="the warning raised",
        )
        fault = {"seq": 2, "ts": time.time(), "type": "fault", "port": 10, "code": "relay"}
        device(SHRUNK).publish_raw(f"facilities/charging/{SHRUNK}/event", json.dumps(fault))
        await wait_for(
            lambda: query(db, FAULT, f"{SHRUNK}/10") == [("active",)], what="the port's fault"
        )
    finally:
        code, _ = first.terminate()
    assert code == 0
    assert query(db, "SELECT count(*) FROM live_state WHERE device = ?", GONE) == [(1,)]

    smaller = _smaller_site(tmp_path / "site.toml")
    log = tmp_path / "second.log"
    second = ServiceProcess(broker, db, client_id=name, log=log, site=smaller)
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
        assert query(db, FAULT, f"{SHRUNK}/10") == [("cleared",)]
        assert query(
            db,
            "SELECT e.detail FROM alert_events e JOIN alerts a ON a.id = e.alert_id"
            " WHERE a.subject = ? AND e.change = 'cleared'",
            f"{SHRUNK}/10",
        ) == [(f"{SHRUNK}/10 is no longer in the site file",)]
        assert log.read_text().count(f"{SHRUNK} has ports or gates no longer in the site") == 1
        assert _ports(second, SHRUNK) == list(range(1, 9))
    finally:
        code, _ = second.terminate()
    assert code == 0
