"""A station's change is told when what a resident sees of it changed, and only then.

The engine skips comparing the station's look before and after a telemetry message that is
sure to change nothing of it (online, every port it reports known and in the state reported):
for any sequence of messages, including late ones, repeated ones, ports heard of for the first
time, faults and availability, its `changed` must be what comparing the whole look says."""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from facilities.rules.engine import Engine
from facilities.rules.observation import station_look
from facilities.site import Site
from tests.support.feed import Feed
from tests.support.payloads import reading

STATION = "cs-01"
STATES = ("idle", "charging", "full", "fault", "disabled")

telemetry = st.fixed_dictionaries(
    {
        "kind": st.just("telemetry"),
        "ports": st.lists(
            st.tuples(st.integers(1, 10), st.sampled_from(STATES)),
            max_size=10,
            unique_by=lambda p: p[0],
        ),
        "seq": st.integers(0, 6),  # repeats, lower ones (late), 0 (a reboot)
        "ts_offset": st.sampled_from([0.0, -30.0, -3600.0]),  # a device clock stepped back
    }
)
station_event = st.fixed_dictionaries(
    {
        "kind": st.just("event"),
        "type": st.sampled_from(["fault", "fault_cleared", "plug_in", "unplug"]),
        "port": st.one_of(st.none(), st.integers(1, 10)),
    }
)
availability = st.fixed_dictionaries(
    {"kind": st.just("availability"), "status": st.sampled_from(["online", "offline"])}
)


def _send(feed: Feed, t: float, step: dict[str, Any]) -> None:
    if step["kind"] == "telemetry":
        ports = [reading(n, state) for n, state in step["ports"]]
        feed.seq = step["seq"]
        feed.station(STATION, t, ports=ports, ts_offset=step["ts_offset"])
    elif step["kind"] == "event":
        fields = {"port": step["port"]} if step["port"] is not None else {}
        feed.event(STATION, t, type=step["type"], **fields)
    else:
        feed.availability(STATION, t, step["status"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(telemetry, station_event, availability), min_size=1, max_size=12))
def test_a_change_is_told_exactly_when_the_stations_look_changed(site: Site, steps) -> None:
    feed = Feed(Engine(site))
    live = feed.engine.stations[STATION]
    for t, step in enumerate(steps):
        before = station_look(live)
        _send(feed, float(t), step)
        assert feed.last is not None
        told = feed.last.changed == STATION
        assert told == (station_look(live) != before), (step, before, station_look(live))
