"""The random safety test's driver: steps drawn from a seeded generator, played against the
real service process through the real broker, with every invariant checked after each step."""

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl
from facilities.site import Site
from simulators.client import DeviceClient
from tests import random_checks as checks
from tests.random_devices import (
    GARAGE,
    NORMAL_TEMP_C,
    STATIONS,
    TOPICS,
    UNKNOWN_STATION,
    Behaviour,
    Garage,
    Ledger,
    Sent,
    Station,
)
from tests.random_steps import Step
from tests.support.processes import ServiceProcess, run_cli

SETTLE_S = 10.0  # messages stored, commands finished: generous for a loaded 2-core machine
EVENTUALLY_S = 5.0  # a re-cut, a clear, an alert write: the rules tick every 1 s; under load
# After the last step: longer than a reconnect after a refused PUBACK (~10 ms), and than an
# alert restored without its evidence takes to clear itself (clear_after_s 1 s + a tick).
WATCH_S = 2.5


@dataclass
class Stats:
    steps: int = 0
    kills: int = 0
    seconds: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)


class Run:
    """One service process with a fresh database and devices on the broker, driven by steps."""

    def __init__(self, workdir: Path, broker: PrivateBroker, site_file: Path, site: Site) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.broker, self.site = broker, site
        self.db = workdir / "facilities.db"
        self.service = ServiceProcess(
            broker,
            self.db,
            client_id=f"random-{uuid.uuid4().hex[:8]}",
            log=workdir / "service.log",
            site=site_file,
            # every bad message is checked to be quarantined once, by its row: no quota here
            # (tests/security/test_quarantine_bounds.py holds the quota)
            extra=("--quarantine-per-device-hour", "1000000"),
        )
        self.ledger = Ledger()
        self.stations: dict[str, Station] = {}
        self.garage: Garage | None = None
        self.rogue: DeviceClient | None = None
        self.retained: set[str] = set()
        self.token = ""
        self.stats = Stats()
        self.known: set[str] = set()  # commands found justified or told: settled for good
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.service.port}", timeout=10)

    def __enter__(self) -> "Run":
        try:
            return self._start()
        except BaseException:
            self.__exit__()  # a device that cannot connect must not leave the service running
            raise

    def _start(self) -> "Run":
        self.service.start()
        added = run_cli("staff", "add", "--db", str(self.db), "--name", "随机测试")
        assert added.returncode == 0, added.stderr
        self.token = added.stdout.strip().splitlines()[-1]
        for sid in STATIONS:
            self.stations[sid] = Station(sid, self.broker.url(sid), self.ledger)
        self.garage = Garage(self.broker.url(GARAGE), self.ledger)
        self.rogue = DeviceClient(
            BrokerUrl.parse(self.broker.url(self.broker.new_user_like("rogue"))), client_id="rogue"
        ).connect()
        return self

    def __exit__(self, *_exc: object) -> None:
        for topic in self.retained:  # the session broker is shared: leave no retained message
            if self.rogue is not None:
                self.rogue.publish_raw(topic, b"", qos=1, retain=True).wait_for_publish(5)
        for device in [*self.stations.values(), self.garage, self.rogue]:
            if device is not None:
                device.close()
        self.http.close()
        process = self.service.process
        if process is not None and process.poll() is None:
            self.service.kill()

    # -- steps ---------------------------------------------------------------------------------

    def do(self, step: Step) -> None:
        self.stats.steps += 1
        self.stats.kinds[step.kind] = self.stats.kinds.get(step.kind, 0) + 1
        station = self.stations.get(step.device)
        assert station is not None and self.garage is not None and self.rogue is not None
        port = station.ports.get(step.port)
        kind = step.kind
        if kind == "telemetry":
            station.telemetry()
        elif kind == "plug" and port is not None:
            port.plugged = step.arg == "in"
            port.overload = port.overload and port.plugged
            station.telemetry()
        elif kind in ("hazard_on", "hazard_off"):
            self._hazard(station, step.port, step.arg, on=kind == "hazard_on")
        elif kind == "fault":
            station.faults[step.port] = step.arg
            station.event("fault", step.port, step.arg)
        elif kind == "fault_cleared":
            station.faults.pop(step.port, None)
            station.event("fault_cleared", step.port)
        elif kind == "garage_smoke":
            self.garage.smoke = step.arg == "on"
            self.garage.telemetry()
        elif kind == "invalid" and step.arg == "unknown":
            body = {"seq": 1, "ts": time.time(), "ports": [], "nonce": uuid.uuid4().hex}
            payload = json.dumps(body).encode()
            self.ledger.add(Sent(payload, 1, None))
            topic = TOPICS.station(UNKNOWN_STATION, "telemetry")
            self.rogue.publish_raw(topic, payload).wait_for_publish(5)
        elif kind == "invalid":
            station.invalid(step.arg)
        elif kind in ("huge_seq", "big_port"):
            station.invalid(kind)
        elif kind == "qos0":
            station.telemetry(qos=0)
        elif kind == "retained_qos0":
            topic = TOPICS.station(station.id, "availability")
            station.client.publish_raw(topic, "online", qos=0, retain=True).wait_for_publish(5)
            self.retained.add(topic)
        elif kind == "duplicate":
            station.duplicate(step.port)
        elif kind == "burst":
            station.burst(step.port)
        elif kind == "late_burst":
            station.late_burst(step.port)
        elif kind == "reorder":
            station.reordered(step.port)
        elif kind == "behaviour":
            name, _, delay = step.arg.partition(":")
            with station.lock:
                station.behaviour = Behaviour(name)
                station.late_s = float(delay or 0)
        elif kind == "staff_ack":
            self._staff_ack(step.port)
        elif kind in ("staff_power_on", "staff_power_off"):
            self._staff_power(station.id, step.port, on=kind == "staff_power_on")
        elif kind == "kill":
            self._kill(station, step.port, step.arg)
        elif kind == "reboot":
            station.reboot()

    def _hazard(self, station: Station, n: int, hazard: str, *, on: bool) -> None:
        port = station.ports[n]
        if hazard == "port_hot":
            port.temp_c = 65.0 if on else NORMAL_TEMP_C
        elif hazard == "overload":
            port.overload = on
            port.plugged = port.plugged or on
            if on:
                station.telemetry()  # two samples in a row over the limit
        elif hazard == "spike" and on:
            port.plugged, overloaded, port.overload = True, port.overload, True
            station.telemetry()
            port.overload = overloaded
        elif hazard == "rise":
            if on:
                station.telemetry()  # the reading before the rise, a second before it
            # capped: a reading a thermistor can give, whatever bounds ingest puts on it
            port.temp_c = min(port.temp_c + 11.0, 95.0) if on else NORMAL_TEMP_C
        elif hazard == "cabinet_hot":
            station.cabinet_temp_c = 62.0 if on else 25.0
        elif hazard == "leakage":
            station.leakage_ma = 35.0 if on else 2.0
        elif hazard == "smoke":
            station.smoke = on
        station.telemetry()

    def _staff(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        response = self.http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 500 and response.status_code not in (502, 504):
            raise checks.InvariantError(
                "api", f"{method} {path}: {response.status_code} {response.text}"
            )
        return response

    def _staff_ack(self, index: int) -> None:
        active = self._staff("GET", "/api/alerts", params={"state": "active"}).json()["items"]
        if active:
            alert = sorted(active, key=lambda a: a["raised_at"])[index % len(active)]
            answer = self._staff("POST", f"/api/alerts/{alert['id']}/ack")
            if answer.status_code not in (200, 404, 409):
                raise checks.InvariantError("api", f"ack: {answer.status_code} {answer.text}")

    def _staff_power(self, station: str, port: int, *, on: bool) -> None:
        path = f"/api/stations/{station}/ports/{port}/power"
        answer = self._staff("POST", path, json={"on": on})
        if answer.status_code not in (200, 409, 502, 504):
            raise checks.InvariantError("api", f"power: {answer.status_code} {answer.text}")

    def _kill(self, station: Station, while_down: int, point: str) -> None:
        self.stats.kills += 1
        _, _, ms = point.partition(":")
        if ms:  # a random point within the previous step's commit, ack and command
            time.sleep(int(ms) / 1000)
        self.service.kill()
        for _ in range(while_down):  # the broker queues these for the service
            station.telemetry()
        self.service.start()

    # -- invariants ----------------------------------------------------------------------------

    def alive(self) -> str | None:
        process = self.service.process
        if process is None or process.poll() is not None:
            code = process.returncode if process else None
            lines = self.service.log.read_text(errors="replace").splitlines() or [""]
            tail = "\n".join(lines[-12:])
            errors = [line for line in lines if "Error" in line] or lines
            return f"the service exited ({code}): {errors[-1].strip()}\n{tail}"
        return None

    def healthy(self) -> str | None:
        if (dead := self.alive()) is not None:
            return dead
        try:
            health = self.http.get("/healthz")
            if health.status_code != 200:
                return f"/healthz {health.status_code}: {health.text}"
            metrics = self.http.get("/metrics").text
        except httpx.HTTPError as exc:
            return f"/healthz: {exc!r}"
        for line in metrics.splitlines():
            if line.startswith("facilities_broker_reconnects_total ") and float(line.split()[1]):
                return f"the service reconnected to a broker that never went away: {line}"
        return None

    def check(self) -> None:
        """Settle (poll, never a fixed sleep), then every invariant; what the rules and the
        devices do in answer to a step may land up to a tick later, so those are polled."""
        if (dead := self.alive()) is not None:
            raise checks.InvariantError("alive", dead)
        self._stored(self.ledger.snapshot())
        checks.until(self._answering, timeout_s=SETTLE_S, name="devices")
        checks.until(lambda: checks.pending(self.db), timeout_s=EVENTUALLY_S, name="cut_or_failed")
        sent = self.ledger.snapshot()  # with what devices published in answer to commands
        self._stored(sent)
        checks.until(self.healthy, timeout_s=EVENTUALLY_S, name="healthy")
        checks.stored_once(self.db, sent)
        checks.until(
            lambda: checks.cut_or_failed(self.db, self.known, self._off),
            timeout_s=EVENTUALLY_S,
            name="cut_or_failed",
        )
        checks.until(
            lambda: checks.evidence(self.db, self.site, self.known),
            timeout_s=EVENTUALLY_S,
            name="evidence",
        )
        assert self.garage is not None
        present = checks.hazards(self.stations.values(), self.garage, self.site)
        checks.until(
            lambda: checks.cut_holds(self.db, self.stations, present),
            timeout_s=EVENTUALLY_S,
            name="cut_or_failed",
        )
        checks.until(
            lambda: checks.consistent(self.http, self.token, present),
            timeout_s=EVENTUALLY_S,
            name="consistent",
        )

    def _off(self, subject: str) -> bool:
        return not any(checks.relays_on(self.stations, subject).values())

    def _stored(self, sent: list[Sent]) -> None:
        def missing() -> str | None:
            if (dead := self.alive()) is not None:
                raise checks.InvariantError("alive", dead)
            return checks.missing(self.db, sent)

        checks.until(missing, timeout_s=SETTLE_S, name="stored_once")

    def watch(self, seconds: float) -> None:
        """The service stays healthy for `seconds` (after the last step: a link that drops a
        moment after a message, as with a PUBACK the broker refuses, shows up here)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if (wrong := self.healthy()) is not None:
                raise checks.InvariantError("healthy", wrong)
            time.sleep(0.05)

    def _answering(self) -> str | None:
        busy = [s.id for s in self.stations.values() if s.busy()]
        return f"{busy} still to answer a command" if busy else None


@dataclass
class Outcome:
    failure: checks.InvariantError | None
    at: int  # index of the step after which it failed (or len(steps))
    stats: Stats


def play(
    steps: list[Step], workdir: Path, broker: PrivateBroker, site_file: Path, site: Site
) -> Outcome:
    """Play `steps` on a fresh service; stop at the first broken invariant."""
    started = time.monotonic()
    with Run(workdir, broker, site_file, site) as run:
        for i, step in enumerate(steps):
            try:
                run.do(step)
                following = steps[i + 1] if i + 1 < len(steps) else None
                if following is None or not following.arg.startswith("early"):
                    run.check()
            except checks.InvariantError as broken:
                run.stats.seconds = time.monotonic() - started
                return Outcome(broken, i, run.stats)
        try:
            run.watch(WATCH_S)
            run.check()  # once more: what the restarted service forgot shows up by now
        except checks.InvariantError as broken:
            return Outcome(broken, len(steps) - 1, run.stats)
        finally:
            run.stats.seconds = time.monotonic() - started
        return Outcome(None, len(steps), run.stats)


def signature(failure: checks.InvariantError) -> str:
    """What a failure is, without its ids, numbers and subjects: shrinking keeps it."""
    return re.sub(r"[0-9a-f]{8,}|s-[0-9a-f]+|cs-\d+(/\d+)?|\d+(\.\d+)?", "#", str(failure))[:160]


def shrink(
    steps: list[Step],
    failure: checks.InvariantError,
    workdir: Path,
    broker: PrivateBroker,
    site_file: Path,
    site: Site,
) -> tuple[list[Step], checks.InvariantError]:
    """The shortest sequence found (delta debugging by removal) that still breaks the same
    invariant the same way, and its failure."""
    tries, wanted = 0, signature(failure)

    def fails(candidate: list[Step]) -> bool:
        nonlocal tries, failure
        tries += 1
        outcome = play(candidate, workdir / f"shrink-{tries}", broker, site_file, site)
        if outcome.failure is None or signature(outcome.failure) != wanted:
            return False
        failure = outcome.failure
        return True

    chunk = max(1, len(steps) // 2)
    while chunk >= 1:
        i = 0
        while i < len(steps):
            candidate = steps[:i] + steps[i + chunk :]
            if candidate and fails(candidate):
                steps = candidate
            else:
                i += chunk
        chunk //= 2
    return steps, failure
