"""A wall clock stepped back (NTP, an operator) changes no duration: rate windows, timeouts
and the rules' timers run on the monotonic clock; alert times never go back."""

import json
from datetime import timedelta

from facilities.access import Role
from facilities.charging.rules import offline
from facilities.clocks import SLEW, SteadyClock
from facilities.verdicts import Verdict
from tests.api_support import Api, bearer
from tests.support.clock import MovableClock
from tests.support.devices import DeviceFactory
from tests.support.poll import wait_for

STEP_S = -300.0
OPEN_PATH = "/api/garages/{}/gates/{}/open"


async def test_failed_authentications_are_forgotten_after_a_minute_whatever_the_wall_clock(
    api: Api, clock: MovableClock
) -> None:
    for _ in range(10):
        assert (await api.http.get("/api/me", headers=bearer("guess"))).status_code == 401
    assert (await api.http.get("/api/me", headers=bearer("guess"))).status_code == 429
    clock.step_wall(STEP_S)
    clock.advance(61)  # a minute passes; the wall clock says four minutes earlier
    assert (await api.http.get("/api/me", headers=bearer("guess"))).status_code == 401


async def test_opens_limited_for_a_minute_not_six(api: Api, clock: MovableClock, gates) -> None:
    _person, token = await api.person(Role.RESIDENT, "李先生", "g-cq4")
    gates("g-cq4")
    for _ in range(5):
        sent = await api.http.post(OPEN_PATH.format("g-cq4", "north"), headers=bearer(token))
        assert sent.status_code == 200
    clock.step_wall(STEP_S)
    limited = await api.http.post(OPEN_PATH.format("g-cq4", "north"), headers=bearer(token))
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) <= 60
    clock.advance(61)
    again = await api.http.post(OPEN_PATH.format("g-cq4", "north"), headers=bearer(token))
    assert again.status_code == 200


async def test_a_silent_station_goes_offline_after_30_s_whatever_the_wall_clock(
    api: Api, clock: MovableClock, device: DeviceFactory
) -> None:
    """Telemetry every 10 s, offline after 3 missed: 31 s of silence is offline, also when
    the wall clock was stepped back 300 s meanwhile; the service's time went on."""
    body = {"seq": 1, "ts": clock(), "ports": [{"port": 1, "state": "idle"}]}
    device("cs-13").publish_raw("facilities/charging/cs-13/telemetry", json.dumps(body))
    service, live = api.service, api.service.live
    spec = service.site.stations["cs-13"]
    await wait_for(
        lambda: live.read(lambda e: e.stations["cs-13"].online is True), what="cs-13 seen"
    )
    seen = live.read(lambda e: e.stations["cs-13"].last_seen)
    assert seen is not None

    def silence() -> list[Verdict]:
        return live.read(lambda e: offline(e.stations["cs-13"], spec, service.now()))

    assert silence() == []
    clock.step_wall(STEP_S)
    clock.advance(31)
    await service.rules.tick()
    assert [v.rule for v in silence()] == ["offline"]
    assert live.read(lambda e: ("offline", "cs-13") in e.alerts)  # the tick raised it
    assert service.now() - seen >= timedelta(seconds=30)  # the service's time went on


def test_the_service_time_never_goes_back_and_catches_up_with_the_wall_clock() -> None:
    wall, mono = [1_000_000.0], [50.0]
    steady = SteadyClock(lambda: wall[0], lambda: mono[0])
    assert steady() == 1_000_000.0
    wall[0] -= 300  # stepped back
    assert steady() == 1_000_000.0
    wall[0] += 100
    mono[0] += 100
    assert steady() == 1_000_000.0 + 100 * (1 - SLEW)  # durations within 1 %
    wall[0] += 40_000  # long enough to catch up (300 s at 1 %: 30,000 s)
    mono[0] += 40_000
    assert steady() == wall[0]
    wall[0] += 3600  # a step forward is taken at once
    assert steady() == wall[0]
