"""Windows are judged on the device's clock when it is within `clock_skew_s` of the server's:
a burst of late readings (a backlog after an outage) is not a sudden rise."""

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

from facilities.garage.payloads import GateEvent
from facilities.messages import Accepted, MessageKind, Route
from facilities.rules.engine import Engine
from facilities.service import Service
from facilities.site import Site
from tests.support.db import query
from tests.support.devices import DeviceFactory
from tests.support.feed import T0
from tests.support.payloads import event as gate_event
from tests.support.payloads import reading, telemetry
from tests.support.poll import wait_for

STATION = "cs-12"
TOPIC = f"facilities/charging/{STATION}/telemetry"


def _sample(seq: int, ts: float, temp_c: float) -> str:
    port = reading(1, power_w=300.0, energy_wh=10.0 + seq, temp_c=temp_c)
    return json.dumps(telemetry(seq, [port], ts=ts, temp_c=30.0))


def _alerts(db: Path, rule: str) -> list[tuple[object, ...]]:
    return query(db, "SELECT subject, state FROM alerts WHERE rule = ?", rule)


def _publish_all(device: DeviceFactory, samples: list[str]) -> None:
    client = device(STATION)
    for info in [client.publish_raw(TOPIC, body) for body in samples]:
        info.wait_for_publish(10)


async def _stored(db: Path, count: int) -> None:
    await wait_for(
        lambda: (
            query(db, "SELECT count(*) FROM port_samples WHERE station = ?", STATION) == [(count,)]
        ),
        what=f"{count} samples stored",
    )


async def test_a_nine_minute_backlog_delivered_at_once_is_not_a_rise(
    service: Service, device: DeviceFactory
) -> None:
    """54 samples, 10 s apart on the device's clock, warming 1.5 °C a minute (13.5 °C in all),
    all delivered within a second after an outage: within any 60 s the socket rose 1.5 °C."""
    now = time.time()
    samples = [_sample(seq, now - 530 + seq * 10, 40.0 + seq * 0.25) for seq in range(54)]
    _publish_all(device, samples)
    db = service.settings.db
    await _stored(db, 54)
    await service.rules.tick()
    assert _alerts(db, "temperature_rise") == []
    assert query(db, "SELECT count(*) FROM commands") == [(0,)]
    # the latest reading is what is shown
    port = service.live.read(lambda e: e.stations[STATION].ports[1].temp_c)
    assert port == 40.0 + 53 * 0.25


async def test_the_same_rise_within_the_window_still_fires(
    service: Service, device: DeviceFactory
) -> None:
    """12 °C within 60 s on the device's clock (delivered at once too): the port goes off."""
    now = time.time()
    samples = [_sample(seq, now - 60 + seq * 10, 40.0 + seq * 2.0) for seq in range(7)]
    _publish_all(device, samples)
    db = service.settings.db
    await wait_for(
        lambda: _alerts(db, "temperature_rise") == [(f"{STATION}/1", "active")],
        what="temperature_rise raised",
    )
    await wait_for(
        lambda: (
            query(db, "SELECT device, port, action FROM commands") == [(STATION, 1, "power_off")]
        ),
        what="power_off sent",
    )


async def test_late_samples_are_stored_but_are_not_the_latest(
    service: Service, device: DeviceFactory
) -> None:
    """The port draws 300 W now; two samples over the port's 1,000 W from before arrive after
    it (a device sending what it buffered). On the device's clock the port is fine now: both
    are stored, neither is 'the last sample', no port_overload."""
    now = time.time()

    def power(seq: int, ts: float, watts: float) -> str:
        return json.dumps(telemetry(seq, [reading(1, power_w=watts)], ts=ts))

    _publish_all(
        device, [power(3, now, 300.0), power(1, now - 30, 1200.0), power(2, now - 20, 1200.0)]
    )
    db = service.settings.db
    await _stored(db, 3)
    await service.rules.tick()
    assert _alerts(db, "port_overload") == []
    assert query(db, "SELECT count(*) FROM commands") == [(0,)]
    assert service.live.read(lambda e: e.stations[STATION].ports[1].power_w) == 300.0


async def test_a_device_clock_skewed_beyond_the_limit_falls_back_to_receive_time(
    service: Service, device: DeviceFactory
) -> None:
    """A clock an hour behind: its timestamps say 60 s apart, but the readings arrived within
    a second; beyond `clock_skew_s` the receive time judges, and 12 °C at once is a rise."""
    behind = time.time() - 3600
    samples = [_sample(seq, behind + seq * 60, 40.0 + seq * 2.0) for seq in range(7)]
    _publish_all(device, samples)
    db = service.settings.db
    await wait_for(
        lambda: _alerts(db, "temperature_rise") == [(f"{STATION}/1", "active")],
        what="temperature_rise on receive time",
    )
    await wait_for(lambda: _alerts(db, "clock_skew") != [], what="clock_skew raised")


def test_refusals_buffered_by_a_garage_are_counted_on_its_clock(site: Site) -> None:
    """Five `denied` 20 s apart on the garage's clock (no burst: at most 3 within 60 s),
    delivered together after an outage: no access_denied_burst. Five within 40 s: a burst."""
    engine = Engine(site)
    route = Route(MessageKind.GATE_EVENT, "g-hc5", "south")
    received = T0 + timedelta(seconds=200)

    def denied(seq: int, ts: datetime) -> list[str]:
        event = GateEvent.model_validate_json(
            json.dumps(gate_event(seq, "denied", ts=ts.timestamp()))
        )
        observed = engine.observe(Accepted(route, event, received.timestamp()))
        return [t.alert.rule for t in observed.transitions]

    for n in range(5):
        assert "access_denied_burst" not in denied(n, T0 + timedelta(seconds=20 * n))
    assert "access_denied_burst" not in [t.alert.rule for t in engine.tick(received)]
    fired = [denied(10 + n, T0 + timedelta(seconds=100 + 10 * n)) for n in range(5)]
    assert "access_denied_burst" in fired[-1]


def _hot(seq: int, ts: float, **fields: object) -> str:
    hot = reading(1, power_w=300.0, temp_c=95.0)
    return json.dumps(telemetry(seq, [hot], ts=ts, **fields))


async def test_one_timestamp_ahead_does_not_make_the_next_readings_late(
    service: Service, device: DeviceFactory
) -> None:
    """One message stamped 590 s ahead (within clock_skew_s), then the device's right time
    again: its next readings go on counting (seq goes on), so a socket at 95 °C is cut at
    once, not ignored as 'late' for ten minutes."""
    now = time.time()
    _publish_all(device, [_sample(0, now, 30.0), _sample(1, now + 590, 30.0), _hot(2, now + 1)])
    db = service.settings.db
    await wait_for(
        lambda: (
            query(
                db,
                "SELECT device, port, action FROM commands WHERE reason = ?",
                "port_over_temperature",
            )
            == [(STATION, 1, "power_off")]
        ),
        what="the hot socket cut",
    )


async def test_a_device_clock_stepped_back_still_reports_smoke(
    service: Service, device: DeviceFactory
) -> None:
    """The clock ran 300 s ahead, then NTP stepped it back: smoke reported after the step is
    the current reading (the station is cut), not a late sample."""
    now = time.time()
    ahead = [_sample(seq, now + 300 + seq, 30.0) for seq in range(3)]
    smoke = json.dumps({"seq": 3, "ts": now + 1, "smoke": True, "temp_c": 30.0, "ports": []})
    _publish_all(device, [*ahead, smoke])
    db = service.settings.db
    await wait_for(lambda: _alerts(db, "smoke") == [(STATION, "active")], what="smoke raised")
    assert service.live.read(lambda e: e.stations[STATION].smoke) is True
