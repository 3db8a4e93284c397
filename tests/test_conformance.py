"""`facilities conformance` (docs/protocol.md, "Conformance"): simulated devices on the session
broker, clean and with faults injected, judged by the service's own decoder and the protocol's
rules; the tool's clock is moved, not waited for."""

import json
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from facilities.charging.payloads import StationEventType
from facilities.conformance.checks import Report, Watch
from facilities.conformance.link import Link
from facilities.errors import UsageError
from facilities.garage.payloads import GarageTelemetry, GateEventType
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.broker_url import BrokerUrl
from facilities.mqtt.topics import Topics
from facilities.site import Site
from facilities.wire import MAX_PAYLOAD_BYTES, Command, CommandAck, CommandAction
from simulators.client import DeviceClient
from simulators.devices import Behaviour, SimulatedGarage, SimulatedStation
from tests.support.clock import MovableClock
from tests.support.devices import Devices
from tests.support.paths import EXAMPLE_SITE
from tests.support.poll import wait_until
from tests.support.processes import run_cli

TOPICS = Topics()
Stations = Callable[..., SimulatedStation]


def tool_url(broker: PrivateBroker) -> str:
    """A broker user of the tool's own, that reads what the service reads and may send
    commands: never the service's user (its connection would replace the service's)."""
    return broker.service_url(f"conformance-{uuid.uuid4().hex[:6]}")


@contextmanager
def watching(
    broker: PrivateBroker,
    site: Site,
    device: str,
    *,
    now: Callable[[], float] = time.time,
    send_command: bool = False,
) -> Iterator[Watch]:
    watch = Watch(site, device, now=now)
    watch.send_command = send_command
    link = Link(BrokerUrl.parse(tool_url(broker)), watch)
    link.start()
    try:
        yield watch
    finally:
        link.close()


def online(client: DeviceClient, topic: str) -> None:
    """What a device does after connecting: a retained `online`."""
    client.publish_raw(topic, "online", retain=True).wait_for_publish(5)


def telemetry(station: SimulatedStation, seq: int, **changed: Any) -> dict[str, Any]:
    """A station's telemetry as its firmware writes it, with `seq` and any field changed."""
    body = station.model.telemetry(time.time(), random.Random(seq)).model_dump(
        mode="json", exclude_none=True
    )
    return {**body, "seq": seq, **changed}


def send(station: SimulatedStation, body: dict[str, Any] | bytes, *, qos: int = 1) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    topic = TOPICS.station(station.model.station, "telemetry")
    station.client.publish_raw(topic, raw, qos=qos).wait_for_publish(5)


def kinds(report: Report) -> set[str]:
    return set(report.found)


def test_a_clean_station_passes_and_acks_the_harmless_command_in_time(
    broker: PrivateBroker, site: Site, stations: Stations
) -> None:
    station = stations("cs-01")
    online(station.client, TOPICS.station("cs-01", "availability"))
    with watching(broker, site, "cs-01", send_command=True) as watch:
        station.publish(station.model.telemetry(time.time(), random.Random(1)))
        wait_until(lambda: station.commands, what="the tool's power_on")
        station.model.pending_events.append((2, StationEventType.PLUG_IN))
        for event in station.model.take_events(time.time()):
            station.client.publish(TOPICS.station("cs-01", "event"), event)
        station.publish(station.model.telemetry(time.time(), random.Random(2)))
        # availability, the command, 3 telemetry (one answering the command), 1 event, 1 ack
        wait_until(lambda: watch.heard() >= 7, what="the station's messages")
        report = watch.report()
    command = station.commands[0]
    assert command.action == "power_on" and command.reason == "conformance"
    assert command.port is not None and command.expires is not None
    assert report.found == {}, report.lines()
    assert report.passed
    assert report.sent is not None and "answered ok" in report.sent
    assert report.lines()[-1] == "PASS: cs-01 follows the protocol"


def test_a_faulty_station_shows_each_deviation_once_with_a_count_and_the_first_example(
    broker: PrivateBroker, site: Site, stations: Stations
) -> None:
    clock = MovableClock()
    station = stations("cs-02", Behaviour.IGNORE)
    online(station.client, TOPICS.station("cs-02", "availability"))
    with watching(broker, site, "cs-02", now=clock, send_command=True) as watch:
        for seq in range(3):
            send(station, telemetry(station, seq))
        send(station, telemetry(station, 1, ts=time.time() + 0.5))  # seq backwards
        extra = telemetry(station, 2, firmware="2.1")
        extra["ports"][0]["relay_ok"] = True
        send(station, extra)
        send(station, telemetry(station, 3), qos=0)
        send(station, telemetry(station, 4, ts=time.time() - 30))  # clock 30 s behind
        send(station, telemetry(station, 5))  # in order again
        missing = telemetry(station, 6)
        del missing["ts"]
        send(station, missing)
        send(station, b'{"seq": 7, "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}')
        command = wait_until(lambda: station.commands, what="the tool's power_on")[0]
        # all heard before the clock moves: the skew above is judged on the tool's clock at
        # receipt (one read after the move said 36 s behind under load)
        wait_until(lambda: watch.heard() >= 12, what="the station's messages before its ack")
        clock.advance(watch.ack_budget_s + 1)  # the station answers 1 s after the timeout
        station.client.publish(
            TOPICS.station("cs-02", "command/ack"), CommandAck(id=command.id, ok=True)
        ).wait_for_publish(5)
        wait_until(lambda: watch.heard() >= 13, what="the station's messages")
        report = watch.report()
    assert kinds(report) == {
        "seq_backwards",
        "extra_field",
        "qos",
        "clock_skew",
        "missing_field",
        "too_large",
        "ack_late",
    }, report.lines()
    assert report.found["seq_backwards"].count == 1  # 5 after 4 is order, 1 after 2 is not
    assert report.found["seq_backwards"].first == "charging/cs-02/telemetry seq 1 after 2"
    assert report.found["extra_field"].first.endswith("firmware, ports[port 1].relay_ok")
    assert (
        "30." in report.found["clock_skew"].first and "behind" in report.found["clock_skew"].first
    )
    assert report.found["missing_field"].first == "charging/cs-02/telemetry: ts: Field required"
    assert report.found["qos"].first == "charging/cs-02/telemetry at QoS 0"
    late = report.found["ack_late"].first
    assert f"after {watch.ack_budget_s + 1:.0f}." in late, late
    assert late.endswith(f"(timeout {watch.ack_budget_s:g} s)")
    assert not report.passed
    lines = report.lines()
    assert lines[-1].startswith("FAIL: cs-02: 6 kind(s) of deviation")
    assert lines[-1].endswith("1 kind(s) of warning")
    assert sum(line.startswith(("FAIL ", "warn ")) for line in lines) == 7  # one per kind
    print("\n".join(lines))


def test_seq_restarting_at_zero_is_a_reboot_and_a_skipped_seq_a_gap(
    broker: PrivateBroker, site: Site, stations: Stations
) -> None:
    station = stations("cs-03")
    online(station.client, TOPICS.station("cs-03", "availability"))
    with watching(broker, site, "cs-03") as watch:
        for seq in (10, 11, 0, 1, 3):
            send(station, telemetry(station, seq))
        send(station, telemetry(station, 3) | {"ts": 0})  # refused: ts must be > 0
        wait_until(lambda: watch.heard() >= 7, what="the station's messages")
        report = watch.report()
    assert kinds(report) == {"seq_restart", "seq_gap", "schema_mismatch"}, report.lines()
    assert report.found["seq_gap"].first == "charging/cs-03/telemetry seq 3 after 1"
    assert report.found["schema_mismatch"].first.startswith("charging/cs-03/telemetry: ts:")
    assert not report.passed  # the gap and the refusal fail; the reboot alone would not


def test_each_refusal_is_named_by_the_services_own_reason(
    broker: PrivateBroker, site: Site, stations: Stations, devices: Devices
) -> None:
    """The tool decodes with the service's decoder: what the service would quarantine."""
    station = stations("cs-11")
    online(station.client, TOPICS.station("cs-11", "availability"))
    ports = site.stations["cs-11"].ports
    with watching(broker, site, "cs-11") as watch:
        send(station, b"{not json")
        send(station, b'{"seq": 0, "ts": NaN}')
        send(station, telemetry(station, 0, ports=[{"port": ports + 1, "state": "idle"}]))
        send(station, telemetry(station, 1, ports="all"))
        # under the shipped ACL a device cannot publish off its topics; a rogue user can
        rogue = devices.client("rogue")
        rogue.publish_raw("facilities/charging/cs-11/status", b"ok").wait_for_publish(5)
        wait_until(lambda: watch.heard() >= 6, what="the refused messages")
        report = watch.report()
    assert kinds(report) == {
        "malformed_json",
        "non_finite_number",
        "unknown_port",
        "schema_mismatch",
        "unknown_topic",
    }, report.lines()
    unknown_port = report.found["unknown_port"].first
    assert unknown_port == f"charging/cs-11/telemetry: port {ports + 1}: cs-11 has {ports} ports"
    assert report.found["unknown_topic"].first == "charging/cs-11/status: not a protocol topic"
    assert report.heard == {"availability": 1, "telemetry": 4, "other": 1}


def test_a_command_never_acked_is_missing_once_it_expires(
    broker: PrivateBroker, site: Site, stations: Stations
) -> None:
    clock = MovableClock()
    station = stations("cs-04", Behaviour.IGNORE)
    online(station.client, TOPICS.station("cs-04", "availability"))
    with watching(broker, site, "cs-04", now=clock, send_command=True) as watch:
        send(station, telemetry(station, 0))
        wait_until(lambda: station.commands, what="the tool's power_on")
        assert watch.waiting_until() == pytest.approx(clock() + watch.ack_wait_s, abs=1.0)
        clock.advance(watch.ack_wait_s + 1)
        report = watch.report()
    assert kinds(report) == {"ack_missing"}, report.lines()
    assert station.commands[0].id in report.found["ack_missing"].first


def test_acks_to_the_services_own_commands_are_timed_too(
    broker: PrivateBroker, site: Site, stations: Stations
) -> None:
    """Without `--send-command` the tool sends nothing, and times the commands it hears."""
    clock = MovableClock()
    station = stations("cs-09", Behaviour.IGNORE)
    online(station.client, TOPICS.station("cs-09", "availability"))
    service = DeviceClient(BrokerUrl.parse(tool_url(broker)), client_id="service").connect()
    try:
        with watching(broker, site, "cs-09", now=clock) as watch:
            for port in (1, 2):
                cut = Command(
                    id=f"cut-{port}",
                    ts=clock(),
                    action=CommandAction.POWER_OFF,
                    port=port,
                    expires=clock() + watch.ack_wait_s,
                )
                service.publish(TOPICS.station("cs-09", "command"), cut).wait_for_publish(5)
            wait_until(lambda: len(station.commands) == 2, what="both commands")
            wait_until(lambda: watch.heard() >= 3, what="the tool hearing them")
            clock.advance(watch.ack_budget_s + 2)
            station.client.publish(
                TOPICS.station("cs-09", "command/ack"), CommandAck(id="cut-1", ok=True)
            ).wait_for_publish(5)
            wait_until(lambda: watch.heard() >= 4, what="the ack")
            clock.advance(watch.ack_wait_s)
            report = watch.report()
    finally:
        service.close()
    assert kinds(report) == {"ack_late", "ack_missing"}, report.lines()
    late = f"charging/cs-09/command/ack: id cut-1 after {watch.ack_budget_s + 2:.0f}."
    assert report.found["ack_late"].first.startswith(late)
    assert report.found["ack_missing"].first == "charging/cs-09/command: id cut-2, none in time"
    assert report.sent is None


def test_a_retry_and_its_repeated_answer_are_one_late_ack(
    broker: PrivateBroker, site: Site, stations: Stations
) -> None:
    """The service sends a command again (same id) when the ack is late; the device answers
    each copy (docs/protocol.md, "Commands"): one late ack, nothing missing or unmatched."""
    clock = MovableClock()
    station = stations("cs-12", Behaviour.IGNORE)
    online(station.client, TOPICS.station("cs-12", "availability"))
    service = DeviceClient(BrokerUrl.parse(tool_url(broker)), client_id="service").connect()
    command_topic, ack_topic = (TOPICS.station("cs-12", s) for s in ("command", "command/ack"))
    try:
        with watching(broker, site, "cs-12", now=clock) as watch:
            expires = clock() + watch.ack_wait_s
            for copy in (1, 2):
                cut = Command(
                    id="cut", ts=clock(), action=CommandAction.POWER_OFF, port=1, expires=expires
                )
                service.publish(command_topic, cut).wait_for_publish(5)
                wait_until(lambda: watch.heard() == 1 + copy, what=f"copy {copy}")  # noqa: B023
                if copy == 1:
                    clock.advance(watch.ack_budget_s + 1)
            for _ in (1, 2):
                ack = CommandAck(id="cut", ok=True)
                station.client.publish(ack_topic, ack).wait_for_publish(5)
            wait_until(lambda: watch.heard() >= 5, what="both answers")
            clock.advance(watch.ack_wait_s)
            report = watch.report()
    finally:
        service.close()
    assert kinds(report) == {"ack_late"}, report.lines()
    assert report.found["ack_late"].count == 1


def test_availability_must_be_retained_and_present(
    broker: PrivateBroker, site: Site, devices: Devices
) -> None:
    client = devices.client("cs-05")
    topic = TOPICS.station("cs-05", "availability")
    client.publish_raw(topic, b"", retain=True).wait_for_publish(5)  # none retained
    with watching(broker, site, "cs-05") as silent:
        report = silent.report()
    assert kinds(report) == {"no_availability"}
    with watching(broker, site, "cs-05") as watch:
        client.publish_raw(topic, "online", retain=False).wait_for_publish(5)
        wait_until(lambda: watch.heard() >= 1, what="the live `online`")
        report = watch.report()
    assert kinds(report) == {"availability_not_retained"}, report.lines()


def test_a_station_silent_for_three_intervals_fails(
    broker: PrivateBroker, site: Site, stations: Stations
) -> None:
    clock = MovableClock()
    station = stations("cs-06")
    online(station.client, TOPICS.station("cs-06", "availability"))
    with watching(broker, site, "cs-06", now=clock) as watch:
        send(station, telemetry(station, 0))
        wait_until(lambda: watch.heard() >= 2, what="the first telemetry")
        clock.advance(31)
        report = watch.report()
    assert kinds(report) == {"telemetry_silence"}, report.lines()


def test_a_clean_garage_with_its_gates_passes(
    broker: PrivateBroker, site: Site, gates: Callable[..., SimulatedGarage]
) -> None:
    garage = gates("g-hc3")
    online(garage.client, TOPICS.garage("g-hc3", "availability"))
    with watching(broker, site, "g-hc3") as watch:
        for seq in range(2):
            body = GarageTelemetry(seq=seq, ts=time.time(), occupancy=40 + seq, smoke=False)
            garage.client.publish(TOPICS.garage("g-hc3", "telemetry"), body)
        garage.gate_event("north", GateEventType.ENTRY, "card:04A1B2C3")
        garage.gate_event("north", GateEventType.EXIT, "card:04A1B2C3")
        garage.gate_event("east", GateEventType.OPENED)
        wait_until(lambda: watch.heard() >= 6, what="the garage's messages")
        report = watch.report()
    assert report.found == {} and report.passed, report.lines()
    assert report.heard == {"availability": 1, "telemetry": 2, "event": 3}


def test_a_device_the_site_does_not_have_is_refused(site: Site) -> None:
    with pytest.raises(UsageError, match="cs-99"):
        Watch(site, "cs-99")


class Tool:
    """`facilities conformance` as a vendor runs it; `first_line` once it is subscribed."""

    def __init__(self, broker: PrivateBroker, out: Path, *args: str) -> None:
        self.out = out
        argv = [sys.executable, "-m", "facilities", "conformance", "--site", str(EXAMPLE_SITE)]
        with out.open("w") as stdout:
            self.process = subprocess.Popen(
                [*argv, "--broker", tool_url(broker), *args],
                stdout=stdout,
                stderr=subprocess.PIPE,
                text=True,
            )
        self.first_line = wait_until(self._subscribed, what="the tool's first line")

    def _subscribed(self) -> str | None:
        if self.process.poll() is not None:
            raise AssertionError(f"exited: {self.out.read_text()}")
        text = self.out.read_text()
        return text.split("\n")[0] if "\n" in text else None

    def finish(self) -> tuple[int, str, str]:
        _out, err = self.process.communicate(timeout=60)
        return self.process.returncode, self.out.read_text(), err


@pytest.mark.slow
def test_the_command_fails_a_faulty_station_with_one_line_per_kind(
    broker: PrivateBroker, stations: Stations, tmp_path: Path
) -> None:
    station = stations("cs-07", Behaviour.REFUSE)
    online(station.client, TOPICS.station("cs-07", "availability"))
    tool = Tool(broker, tmp_path / "out", "--device", "cs-07", "--seconds", "3", "--send-command")
    assert tool.first_line.startswith("watching cs-07 on mqtt://conformance-")
    send(station, telemetry(station, 0))
    send(station, telemetry(station, 1, firmware="2.1"), qos=0)
    send(station, telemetry(station, 4))
    send(station, telemetry(station, 2, ts=time.time() - 10))
    send(station, b'{"seq": 5, "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}')
    code, out, err = tool.finish()
    print(out)
    assert code == 1, err
    lines = out.splitlines()
    assert lines[1] == (
        "will send one power_on of a port the station reports powered (a no-op) to test the"
        " ack path"
    )
    assert lines[2] == "heard from cs-07 in 3 s: 1 ack, 1 availability, 1 command, 5 telemetry"
    assert lines[3].startswith("sent power_on of port 1 (reported ")
    assert "answered ok=false (relay stuck (simulated))" in lines[3]
    deviations = [line.split(" ×")[0] for line in lines[4:-1]]
    assert deviations == [
        "FAIL too_large",
        "FAIL seq_backwards",
        "FAIL seq_gap",
        "FAIL clock_skew",
        "FAIL qos",
        "FAIL ack_refused",
        "warn extra_field",
    ]
    assert lines[-1] == "FAIL: cs-07: 6 kind(s) of deviation (6 in all), 1 kind(s) of warning"


@pytest.mark.slow
def test_the_command_passes_a_clean_station(
    broker: PrivateBroker, stations: Stations, tmp_path: Path
) -> None:
    station = stations("cs-08")
    online(station.client, TOPICS.station("cs-08", "availability"))
    tool = Tool(broker, tmp_path / "out", "--device", "cs-08", "--seconds", "2")
    for seq in range(2):
        send(station, telemetry(station, seq))
    code, out, err = tool.finish()
    assert code == 0, out + err
    assert out.splitlines()[-1] == "PASS: cs-08 follows the protocol"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--device", "cs-99"), "--device cs-99: not a station or garage of the site file"),
        (("--device", "g-hc3", "--send-command"), "--send-command: a garage's only command"),
        (("--device", "cs-01", "--seconds", "0"), "--seconds"),
        (("--device", "cs-01", "--broker", "mqtt://facilities:x@127.0.0.1:1"), "service's own"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: tuple[str, ...], says: str) -> None:
    done = run_cli("conformance", "--site", str(EXAMPLE_SITE), *args)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert done.stdout == ""


@pytest.mark.slow
def test_ctrl_c_stops_the_watch_early_with_the_report_so_far(
    broker: PrivateBroker, devices: Devices, tmp_path: Path
) -> None:
    client = devices.client("cs-10")  # a device that says nothing, not even `online`
    client.publish_raw(TOPICS.station("cs-10", "availability"), b"", retain=True).wait_for_publish(
        5
    )
    tool = Tool(broker, tmp_path / "out", "--device", "cs-10", "--seconds", "600")
    tool.process.send_signal(signal.SIGINT)
    code, out, err = tool.finish()
    assert code == 1, out + err
    lines = out.splitlines()
    assert lines[1:3] == ["stopped early (Ctrl-C)", "heard from cs-10 in 0 s: nothing"]
    assert lines[3].startswith("FAIL no_availability ×1:")
    assert lines[-1] == "FAIL: cs-10: 1 kind(s) of deviation (1 in all)"
