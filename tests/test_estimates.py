"""When a charging port's charge will be done: each port its own estimate, from the energy it
has delivered and the power it draws, against what a full charge takes at its station (the
stored sessions that ended full or unplugged; 500 Wh until there are 5)."""

import json
import re
from datetime import datetime, timedelta

from tests.api_support import Api
from tests.support.db import query
from tests.support.payloads import event, port, telemetry
from tests.support.poll import wait_for

SLACK = timedelta(seconds=30)  # the request's own moment against the test's


async def _done_at(api: Api, station: str) -> tuple[datetime, dict[int, timedelta]]:
    """The service's now and, per charging port, how far ahead its estimate is."""
    now = api.service.now()
    body = (await api.http.get(f"/api/stations/{station}")).json()
    return now, {
        p["port"]: datetime.fromisoformat(p["free_estimate_at"]) - now
        for p in body["ports"]
        if p["free_estimate_at"] is not None
    }


def _near(found: timedelta, expected: timedelta) -> bool:
    return abs(found - expected) <= SLACK


async def test_each_charging_port_has_its_own_estimate(api: Api, device) -> None:
    cs03, cs04 = device("cs-03"), device("cs-04")
    db = api.service.settings.db

    def stored(station: str, seq: int) -> bool:
        sql = "SELECT 1 FROM station_samples WHERE station = ? AND seq = ?"
        return query(db, sql, station, seq) != []

    # no sessions yet: a full charge is taken to be 500 Wh; 200 Wh left at 250 W is 48 min
    cs04.publish_raw(
        "facilities/charging/cs-04/telemetry",
        json.dumps(telemetry(1, [port(1, "charging", power_w=250.0, energy_wh=300.0)])),
    )
    await wait_for(lambda: stored("cs-04", 1), what="cs-04 message 1")
    _, ahead = await _done_at(api, "cs-04")
    assert _near(ahead[1], timedelta(minutes=48)), ahead

    # five charges at cs-03 end after 800 Wh each: that is what a charge takes here
    charging = [port(n, "charging", power_w=200.0, energy_wh=800.0) for n in range(1, 6)]
    cs03.publish_raw("facilities/charging/cs-03/telemetry", json.dumps(telemetry(1, charging)))
    await wait_for(lambda: stored("cs-03", 1), what="cs-03 message 1")
    unplugged = [port(n) for n in range(1, 6)]
    cs03.publish_raw("facilities/charging/cs-03/telemetry", json.dumps(telemetry(2, unplugged)))
    await wait_for(
        lambda: query(db, "SELECT count(*), min(energy_wh) FROM charging_sessions") == [(5, 800.0)],
        what="five charges stored",
    )
    await api.service.estimates.refresh()

    now_charging = [
        port(6, "charging", power_w=250.0, energy_wh=300.0),  # 500 Wh left: 2 h
        port(7, "charging", power_w=200.0, energy_wh=790.0),  # a tenth (80 Wh) left: 24 min
        port(8, "charging", power_w=20.0, energy_wh=700.0),  # topping up: about done
        port(9, "charging", power_w=320.0, energy_wh=0.0),  # just plugged in: 2.5 h
        port(10, "charging", power_w=40.0, energy_wh=0.0),  # 20 h at 40 W: the 8 h cap
    ]
    cs03.publish_raw("facilities/charging/cs-03/telemetry", json.dumps(telemetry(3, now_charging)))
    await wait_for(lambda: stored("cs-03", 3), what="cs-03 message 3")
    _, ahead = await _done_at(api, "cs-03")
    expected = {
        6: timedelta(hours=2),
        7: timedelta(minutes=24),
        8: timedelta(minutes=10),
        9: timedelta(hours=2.5),
        10: timedelta(hours=8),
    }
    assert set(ahead) == set(expected)
    assert all(_near(ahead[n], expected[n]) for n in expected), ahead
    # a station without sessions of its own takes the site's: 500 Wh left at 250 W is 2 h
    _, ahead = await _done_at(api, "cs-04")
    assert _near(ahead[1], timedelta(hours=2)), ahead

    # the residents' page says how it is estimated, and each port's time is its own
    page = (await api.http.get("/stations/cs-03", headers={"Accept-Language": "en"})).text
    assert 'class="estimate-note"' in page
    shown = re.findall(r'<span class="detail"[^>]*>([^<]*charged by about [^<]*)</span>', page)
    assert len(set(shown)) == 5, shown


async def test_a_port_shown_in_fault_has_no_estimate(api: Api, device) -> None:
    """A resident is given a time only for a port shown `charging` (docs/api.md): a port whose
    fault event is open is shown `fault`, though it last reported charging, and gets none
    until the fault is cleared."""
    cs05 = device("cs-05")
    db = api.service.settings.db
    charging = [port(1, "charging", power_w=250.0, energy_wh=300.0)]
    cs05.publish_raw("facilities/charging/cs-05/telemetry", json.dumps(telemetry(1, charging)))
    await wait_for(
        lambda: query(db, "SELECT 1 FROM station_samples WHERE station = 'cs-05'") != [],
        what="cs-05's telemetry",
    )
    _, ahead = await _done_at(api, "cs-05")
    assert set(ahead) == {1}

    def events() -> int:
        return len(query(db, "SELECT 1 FROM charging_events WHERE station = 'cs-05'"))

    fault = event(2, "fault", port=1, code="relay_stuck")
    cs05.publish_raw("facilities/charging/cs-05/event", json.dumps(fault))
    await wait_for(lambda: events() == 1, what="the fault event")
    body = (await api.http.get("/api/stations/cs-05")).json()
    assert body["ports"][0]["state"] == "fault"
    assert body["ports"][0]["free_estimate_at"] is None

    cleared = event(3, "fault_cleared", port=1)
    cs05.publish_raw("facilities/charging/cs-05/event", json.dumps(cleared))
    await wait_for(lambda: events() == 2, what="the fault cleared")
    _, ahead = await _done_at(api, "cs-05")
    assert set(ahead) == {1}
