"""docs/protocol.md, "What a device publishes, case by case", against the rules engine: what a
planned stop raises and when it clears, a fault that a reboot does not clear (and the
`fault_cleared` sweep that does, harmlessly), a port left out of a message, and how many
samples an overload published at once needs."""

import pytest

from facilities.rules.engine import Engine
from facilities.verdicts import Severity
from tests.support.feed import Feed, changes, raised
from tests.support.payloads import reading


@pytest.fixture
def feed(site) -> Feed:
    return Feed(Engine(site))


def test_a_planned_stop_raises_a_warning_at_once_which_clears_after_the_return(
    feed: Feed,
) -> None:
    feed.station("cs-03", 0)
    fired = raised(feed.availability("cs-03", 1, "offline"), "offline")
    assert [(t.alert.subject, t.alert.severity, t.actions) for t in fired] == [
        ("cs-03", Severity.WARNING, ())
    ]
    # back: `online`, then telemetry every 10 s as usual
    feed.availability("cs-03", 100, "online")
    seen = []
    for t in range(100, 160, 10):
        feed.station("cs-03", t)
        seen += changes(feed.tick(t + 9), "offline")
    assert "cleared:cs-03" not in seen
    assert changes(feed.tick(160), "offline") == ["cleared:cs-03"]


def test_a_stop_without_offline_raises_it_after_30_s_of_silence(feed: Feed) -> None:
    feed.station("cs-03", 0)
    assert raised(feed.tick(29), "offline") == []
    assert [t.alert.subject for t in raised(feed.tick(30), "offline")] == ["cs-03"]


def test_a_reboot_does_not_clear_a_fault_and_the_sweep_of_fault_cleared_does(
    feed: Feed,
) -> None:
    feed.event("cs-04", 0, type="fault", port=2, code="relay_stuck")
    # the station reboots: online again, seq from 0, every port reported
    feed.availability("cs-04", 10, "online")
    feed.station("cs-04", 11, ports=[reading(n, "idle", power_w=0.0) for n in (1, 2, 3)])
    assert changes(feed.tick(200), "device_fault") == []  # still open: nothing cleared it
    # the sweep after booting: fault_cleared for the station and every port without a fault
    swept = []
    for port in (None, 1, 2, 3):
        fields = {"port": port} if port is not None else {}
        swept += changes(feed.event("cs-04", 201, type="fault_cleared", **fields), "device_fault")
    assert [c for c in swept if not c.startswith("updated:")] == []  # nothing raised
    assert changes(feed.tick(261), "device_fault") == ["cleared:cs-04/2"]
    assert [a.subject for a in feed.engine.alerts.values() if a.rule == "device_fault"] == []


def test_a_port_left_out_keeps_its_last_reading_and_counts_in_the_total(feed: Feed) -> None:
    feed.station("cs-05", 0, ports=[reading(1, "charging", power_w=800.0)])
    feed.station("cs-05", 10, ports=[reading(2, "charging", power_w=300.0)])
    live = feed.engine.stations["cs-05"]
    assert (live.ports[1].state.value, live.ports[1].power_w) == ("charging", 800.0)
    assert list(live.ports[1].powers) == [800.0]  # no sample from a message without it
    assert live.total_powers[-1] == 1100.0


def test_an_overload_published_at_once_is_cut_on_the_second_message(feed: Feed) -> None:
    # in cadence at 0 s; the port crosses 1000 W at 3 s and the device publishes at once,
    # then a second later: cut at 4 s instead of 20 s
    feed.port("cs-06", 0, state="charging", power_w=400.0)
    assert raised(feed.port("cs-06", 3, state="charging", power_w=1400.0), "port_overload") == []
    fired = raised(feed.port("cs-06", 4, state="charging", power_w=1400.0), "port_overload")
    assert [t.alert.subject for t in fired] == ["cs-06/1"]
    assert fired[0].actions
