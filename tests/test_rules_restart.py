"""Rule state survives a restart: open alerts, timers (charge_complete's 120 min), live state."""

from collections.abc import Callable

from facilities.service import run
from facilities.settings import Settings
from facilities.site import Site
from facilities.wiring import build
from simulators.devices import SimulatedStation
from tests.support.clock import MovableClock
from tests.support.db import query
from tests.support.poll import wait_for


async def test_a_restart_mid_timer_keeps_the_timer_and_the_open_alerts(
    settings: Settings, site: Site, stations: Callable[..., SimulatedStation]
) -> None:
    clock = MovableClock(frozen=True)
    station = stations("cs-15", now=clock)
    first = build(settings, site, clock=clock, monotonic=clock)
    async with run(first):
        await wait_for(lambda: first.link.subscribed, what="subscription")
        # a bike nearly full: trickling at 12 W; the cabinet warm enough for a warning
        station.publish_raw(
            {
                "seq": 1,
                "ts": clock(),
                "temp_c": 52.0,
                "ports": [{"port": 1, "state": "charging", "power_w": 12.0, "energy_wh": 640.0}],
            }
        )
        await wait_for(
            lambda: first.live.read(lambda e: ("over_temperature", "cs-15") in e.alerts),
            what="warning raised",
        )
        trickling_since = first.live.read(lambda e: e.stations["cs-15"].ports[1].low_power_since)
        assert trickling_since is not None
    # the service is down for most of the two hours
    clock.advance(7199)
    second = build(settings, site, clock=clock, monotonic=clock)
    async with run(second):
        await wait_for(lambda: second.link.subscribed, what="subscription")
        live = second.live
        assert live.read(lambda e: ("over_temperature", "cs-15") in e.alerts)  # back
        port = live.read(lambda e: e.stations["cs-15"].ports[1])
        assert port.low_power_since == trickling_since  # and so is the timer
        assert port.session_started is not None
        await second.rules.tick()
        assert not live.read(lambda e: ("charge_complete", "cs-15/1") in e.alerts)  # 7199 s
        clock.advance(1)
        await second.rules.tick()
        assert live.read(lambda e: ("charge_complete", "cs-15/1") in e.alerts)
        await wait_for(
            lambda: [c.port for c in station.commands] == [1], what="power_off of port 1"
        )
        db = settings.db
        await wait_for(
            lambda: query(db, "SELECT outcome FROM commands") == [("acked",)], what="ack"
        )
        await wait_for(
            lambda: (
                query(db, "SELECT port, energy_wh, end_reason FROM charging_sessions")
                == [(1, 640.0, "full")]
            ),
            what="the session, ended as full",
        )
    assert query(settings.db, "SELECT count(*) FROM alerts WHERE rule = 'over_temperature'") == [
        (1,)
    ]  # restored, not raised twice
