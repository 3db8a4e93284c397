"""Charging sessions from telemetry and events: start, end, energy, peak, end reason."""

from facilities.charging.state import EndReason
from facilities.rules.engine import Engine
from tests.support.feed import Feed, at


def test_a_session_from_plug_in_to_unplug(site) -> None:
    feed = Feed(Engine(site))
    feed.event("cs-01", 0, type="plug_in", port=2)
    feed.port("cs-01", 10, 2, power_w=310.0, energy_wh=1.0)
    feed.port("cs-01", 20, 2, power_w=330.0, energy_wh=300.0)
    feed.port("cs-01", 30, 2, state="full", power_w=3.0, energy_wh=640.5)
    assert feed.sessions == []
    feed.event("cs-01", 40, type="unplug", port=2)
    [session] = feed.sessions
    assert (session.station, session.port) == ("cs-01", 2)
    assert (session.started_at, session.ended_at) == (at(0), at(40))
    assert (session.energy_wh, session.peak_w) == (640.5, 330.0)
    assert session.end_reason is EndReason.UNPLUG


def test_a_port_back_to_idle_ends_its_session(site) -> None:
    feed = Feed(Engine(site))
    feed.port("cs-02", 0, 1, power_w=200.0, energy_wh=5.0)
    feed.port("cs-02", 10, 1, state="idle", power_w=0.0, energy_wh=0.0)
    assert [(s.end_reason, s.energy_wh) for s in feed.sessions] == [(EndReason.UNPLUG, 5.0)]


def test_end_reasons_follow_what_switched_the_port_off(site) -> None:
    feed = Feed(Engine(site))
    # charge_complete: the service powers the port off, the station reports it disabled
    feed.port("cs-03", 0, 1, power_w=10.0, energy_wh=700.0)
    feed.tick(7200)
    feed.port("cs-03", 7201, 1, state="disabled", power_w=0.0, energy_wh=700.0)
    # overload
    feed.port("cs-04", 0, 1, power_w=1200.0, energy_wh=50.0)
    feed.port("cs-04", 10, 1, power_w=1200.0, energy_wh=53.0)
    feed.port("cs-04", 11, 1, state="disabled", power_w=0.0)
    # a fault reported by the station
    feed.port("cs-05", 0, 1, power_w=300.0, energy_wh=10.0)
    feed.port("cs-05", 10, 1, state="fault", power_w=0.0)
    # switched off by someone else (staff, maintenance)
    feed.port("cs-06", 0, 1, power_w=300.0, energy_wh=10.0)
    feed.port("cs-06", 10, 1, state="disabled", power_w=0.0)
    # no load
    feed.port("cs-07", 0, 1, power_w=0.5, energy_wh=0.0)
    feed.tick(300)
    feed.port("cs-07", 301, 1, state="disabled", power_w=0.0)
    # too long
    feed.port("cs-08", 0, 1, power_w=200.0, energy_wh=1.0)
    feed.tick(28801)
    feed.port("cs-08", 28802, 1, state="disabled", power_w=0.0)
    reasons = {s.station: s.end_reason for s in feed.sessions}
    assert reasons == {
        "cs-03": EndReason.FULL,
        "cs-04": EndReason.OVERLOAD,
        "cs-05": EndReason.FAULT,
        "cs-06": EndReason.REMOTE,
        "cs-07": EndReason.NO_LOAD,
        "cs-08": EndReason.TOO_LONG,
    }
