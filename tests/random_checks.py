"""The invariants of the random safety test, read from outside the service: the SQLite file
(read-only) and the HTTP API, as an operator and a resident would see them."""

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx

from facilities.site import Site
from tests.random_devices import GARAGE, STATION_GARAGE, STATIONS, Garage, Sent, Station
from tests.support.db import query as _query
from tests.support.poll import WaitTimeoutError, wait_until

# Rules whose critical alert switches power off (docs/rules.md, Charging and Garage rules).
CUT_RULES = frozenset(
    {
        "port_overload",
        "station_overload",
        "port_over_temperature",
        "over_temperature",
        "temperature_rise",
        "leakage",
        "smoke",
    }
)
# Alert changes that do not bring a failure to a person's attention again.
QUIET_CHANGES = frozenset({"updated", "acknowledged", "cleared"})


def query(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of the service's database, read-only (tests/support/db.py), loosely typed."""
    return cast(list[tuple[Any, ...]], _query(db, sql, *params))


class InvariantError(AssertionError):
    """An invariant does not hold; `name` is which one (the signature shrinking keeps)."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"[{name}] {detail}")
        self.name = name


def until(condition: Callable[[], str | None], *, timeout_s: float, name: str) -> None:
    """Poll `condition` (None: holds; else what is wrong) until it holds or time is up."""
    wrong: list[str | None] = [None]

    def holds() -> bool:
        wrong[0] = condition()
        return wrong[0] is None

    try:
        wait_until(holds, timeout_s=timeout_s, what=name, interval_s=0.02)
    except WaitTimeoutError:
        raise InvariantError(name, str(wrong[0])) from None


# -- stored exactly once -----------------------------------------------------------------------


def _stored(db: Path) -> tuple[Counter[tuple[object, ...]], Counter[bytes]]:
    keys: Counter[tuple[object, ...]] = Counter()
    for table, device in (
        ("station_samples", "station"),
        ("charging_events", "station"),
        ("garage_samples", "garage"),
    ):
        for row in query(db, f"SELECT {device}, ts, seq FROM {table}"):  # noqa: S608
            keys[(table, *row)] += 1
    # by the SHA-256 of the whole message: a row keeps only its first 1 KiB
    quarantined = Counter(bytes(r[0]) for r in query(db, "SELECT digest FROM quarantine"))
    return keys, quarantined


def _count(item: Sent, keys: Counter[tuple[object, ...]], quarantined: Counter[bytes]) -> int:
    stored = keys[item.key] if item.key is not None else 0
    if item.key is None or item.either:
        stored += quarantined[hashlib.sha256(item.payload).digest()]
    return stored


def missing(db: Path, sent: Iterable[Sent]) -> str | None:
    """What QoS 1 message is not stored (nor quarantined) yet."""
    keys, quarantined = _stored(db)
    for item in sent:
        if item.qos == 1 and _count(item, keys, quarantined) == 0:
            what = "stored" if item.key is not None else "quarantined"
            return f"not {what} after the settle wait: {item.payload[:160]!r}"
    return None


def stored_once(db: Path, sent: list[Sent]) -> None:
    keys, quarantined = _stored(db)
    for item in {s.payload: s for s in sent}.values():  # a device's own repeat is one message
        count = _count(item, keys, quarantined)
        if item.qos == 1 and count != 1:
            what = "stored" if item.key is not None else "quarantined"
            raise InvariantError(
                "stored_once", f"QoS 1 message {what} {count} times: {item.payload[:200]!r}"
            )
        if item.qos == 0 and count > 1:
            raise InvariantError(
                "stored_once", f"QoS 0 message stored {count} times: {item.payload!r}"
            )


# -- commands, cut-offs, evidence --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandRow:
    id: str
    device: str
    port: int | None
    gate: str | None
    action: str
    reason: str
    requested_by: str
    alert_id: str | None
    sent_at: float
    outcome: str
    done_at: float | None

    @property
    def subject(self) -> str:
        if self.gate is not None:
            return f"{self.device}/{self.gate}"
        return f"{self.device}/{self.port}" if self.port is not None else self.device


def commands(db: Path) -> list[CommandRow]:
    rows = query(
        db,
        "SELECT id, device, port, gate, action, reason, requested_by, alert_id, sent_at,"
        " outcome, done_at FROM commands ORDER BY sent_at",
    )
    return [CommandRow(*r) for r in rows]


def pending(db: Path) -> str | None:
    left = [c for c in commands(db) if c.outcome == "pending"]
    return f"commands still pending: {left}" if left else None


def _failure_told(command: CommandRow, db: Path) -> bool:
    """A failed command reached a person: `command_failed` of its subject was raised (or
    re-escalated) after it was sent, or one was active and not yet acknowledged then."""
    events = query(
        db,
        "SELECT e.change, e.at FROM alert_events e JOIN alerts a ON a.id = e.alert_id"
        " WHERE a.rule = 'command_failed' AND a.subject = ?",
        command.subject,
    )
    if any(change not in QUIET_CHANGES and float(at) >= command.sent_at for change, at in events):
        return True
    done = command.done_at or command.sent_at
    for raised, acked, cleared in query(
        db,
        "SELECT raised_at, acknowledged_at, cleared_at FROM alerts"
        " WHERE rule = 'command_failed' AND subject = ?",
        command.subject,
    ):
        if (
            float(raised) <= done
            and (acked is None or float(acked) >= done)
            and (cleared is None or float(cleared) >= done)
        ):
            return True
    return False


def cut_or_failed(db: Path, known: set[str], already_off: Callable[[str], bool]) -> str | None:
    """Every critical alert of a cutting rule sent its power-off (unless its subject was off
    at the device already: a cut still in force needs no second command); every power-off
    (the rules' or staff's) was acknowledged by the device, or `command_failed` told a
    person. `known`: commands already found told (it cannot be undone: the check grows)."""
    sent = commands(db)
    by_alert: dict[str, list[CommandRow]] = {}
    for c in sent:
        if c.alert_id:
            by_alert.setdefault(c.alert_id, []).append(c)
    for alert_id, rule, subject, severity in query(
        db, "SELECT id, rule, subject, severity FROM alerts"
    ):
        cutting = rule in CUT_RULES and severity == "critical"
        if cutting and not by_alert.get(str(alert_id)) and not already_off(str(subject)):
            return f"{rule} on {subject}: no command was ever sent, and it is on"
    for c in sent:
        if c.outcome == "pending":
            return f"{c.action} {c.subject} ({c.reason}) left pending"
        must_tell = c.action == "power_off" or c.requested_by == "rules"
        if c.outcome == "acked" or not must_tell or f"told {c.id}" in known:
            continue
        if _failure_told(c, db):
            known.add(f"told {c.id}")
        else:
            return (
                f"{c.action} {c.subject} by {c.requested_by} ({c.reason}) {c.outcome}"
                " and no command_failed raised for it"
            )
    return None


def _runs_over(values: list[float], limit: float, n: int) -> bool:
    run = 0
    for v in values:
        run = run + 1 if v > limit else 0
        if run >= n:
            return True
    return False


def _rose(samples: list[tuple[float, float]], rise: float, window_s: float) -> bool:
    """A rise of `rise` within `window_s` of device time (samples sorted by ts)."""
    for i, (ts, temp) in enumerate(samples):
        for later_ts, later in samples[i + 1 :]:
            if later_ts - ts > window_s:
                break
            if later_ts > ts and later - temp >= rise:
                return True
    return False


def has_evidence(db: Path, site: Site, c: CommandRow, rule: str) -> bool:
    """Whether the stored telemetry, on the device's own clock, shows what `rule` needs to cut
    the command's subject (docs/rules.md)."""
    spec = site.stations[c.device]
    t = spec.thresholds

    def one(sql: str, *params: object) -> bool:
        return bool(query(db, sql, *params))

    if rule == "port_over_temperature" and c.port is not None:
        return one(
            "SELECT 1 FROM port_samples WHERE station = ? AND port = ? AND temp_c >= ?",
            c.device,
            c.port,
            t.port_temp_max_c,
        )
    if rule == "port_overload" and c.port is not None:
        powers = query(
            db,
            "SELECT power_w FROM port_samples WHERE station = ? AND port = ? ORDER BY ts",
            c.device,
            c.port,
        )
        return _runs_over([float(p or 0.0) for (p,) in powers], spec.port_max_w, t.overload_samples)
    if rule == "station_overload":
        totals = query(
            db,
            "SELECT sum(power_w) FROM port_samples WHERE station = ? GROUP BY ts, seq ORDER BY ts",
            c.device,
        )
        return _runs_over(
            [float(p or 0.0) for (p,) in totals], spec.station_max_w, t.overload_samples
        )
    if rule == "over_temperature":
        return one(
            "SELECT 1 FROM station_samples WHERE station = ? AND temp_c >= ?",
            c.device,
            t.cabinet_temp_max_c,
        )
    if rule == "leakage":
        return one(
            "SELECT 1 FROM station_samples WHERE station = ? AND leakage_ma >= ?",
            c.device,
            t.leakage_max_ma,
        )
    if rule == "smoke":
        garage = STATION_GARAGE.get(c.device, "")
        return one(
            "SELECT 1 FROM station_samples WHERE station = ? AND smoke = 1", c.device
        ) or one("SELECT 1 FROM garage_samples WHERE garage = ? AND smoke = 1", garage)
    if rule == "temperature_rise":
        if c.port is not None:
            rows = query(
                db,
                "SELECT ts, temp_c FROM port_samples WHERE station = ? AND port = ?"
                " AND temp_c IS NOT NULL ORDER BY ts",
                c.device,
                c.port,
            )
        else:
            rows = query(
                db,
                "SELECT ts, temp_c FROM station_samples WHERE station = ?"
                " AND temp_c IS NOT NULL ORDER BY ts",
                c.device,
            )
        samples = [(float(ts), float(temp)) for ts, temp in rows]
        return _rose(samples, t.temp_rise_c, t.temp_rise_window_s)
    return False  # a rule this test does not know: a cut it cannot justify


def evidence(db: Path, site: Site, known: set[str]) -> str | None:
    """Every power-off the rules sent is justified by the stored telemetry. The rule is the
    alert's (a command re-sent for an open alert may give another reason), else the reason.
    `known`: commands already found justified (stored telemetry is never taken back)."""
    rules = dict(query(db, "SELECT id, rule FROM alerts"))
    for c in commands(db):
        rule = rules.get(c.alert_id, c.reason)
        if c.requested_by != "rules" or c.action != "power_off" or f"justified {c.id}" in known:
            continue
        if has_evidence(db, site, c, rule):
            known.add(f"justified {c.id}")
        else:
            return (
                f"power_off {c.subject} for {rule} without a reading over the limit"
                " on the device's clock in the stored telemetry"
            )
    return None


# -- live state vs alerts ----------------------------------------------------------------------


def hazards(stations: Iterable[Station], garage: Garage, site: Site) -> set[tuple[str, str]]:
    """(rule, subject) of every lasting hazard the devices read now (and have published)."""
    found: set[tuple[str, str]] = set()
    for s in stations:
        t = site.stations[s.id].thresholds
        for n, p in s.ports.items():
            if p.temp_c >= t.port_temp_max_c:
                found.add(("port_over_temperature", f"{s.id}/{n}"))
        for n in s.faults:
            found.add(("device_fault", f"{s.id}/{n}"))
        if s.cabinet_temp_c >= t.cabinet_temp_max_c:
            found.add(("over_temperature", s.id))
        if s.leakage_ma >= t.leakage_max_ma:
            found.add(("leakage", s.id))
        if s.smoke:
            found.add(("smoke", s.id))
    if garage.smoke:
        found.add(("smoke", GARAGE))
    return found


def relays_on(stations: dict[str, Station], subject: str) -> dict[str, list[int]]:
    """Ports switched on at the devices, of a subject (`cs-01/2`, `cs-01`, the garage)."""
    device, _, port = subject.partition("/")
    targets: list[tuple[str, int | None]]
    if device == GARAGE:  # garage smoke: the stations inside it
        targets = [(sid, None) for sid, garage in STATION_GARAGE.items() if garage == GARAGE]
    else:
        targets = [(device, int(port) if port else None)]
    found: dict[str, list[int]] = {}
    for sid, n in targets:
        station = stations[sid]
        with station.lock:
            found[sid] = [k for k, p in station.ports.items() if p.relay_on and n in (None, k)]
    return found


def cut_holds(db: Path, stations: dict[str, Station], present: set[tuple[str, str]]) -> str | None:
    """Every lasting hazard the devices read has its power off at the device now (switched
    back on by staff or by a reboot, it is cut again), or `command_failed` is open for it."""
    failed = {
        str(subject)
        for (subject,) in query(
            db, "SELECT subject FROM alerts WHERE rule = 'command_failed' AND state != 'cleared'"
        )
    }
    for rule, subject in sorted(present):
        if rule not in CUT_RULES:
            continue
        for sid, on in relays_on(stations, subject).items():
            told = {sid, subject} & failed
            if on and not told:
                return (
                    f"{rule} on {subject}: {sid} port(s) {on} are on at the device"
                    " and no command_failed is open"
                )
    return None


def consistent(http: httpx.Client, token: str, present: set[tuple[str, str]]) -> str | None:
    """What is inconsistent between GET /api/alerts, GET /api/stations/{id} and the hazards
    the devices read; None when nothing is."""
    listed = http.get(
        "/api/alerts", params={"limit": 500}, headers={"Authorization": f"Bearer {token}"}
    )
    if listed.status_code != 200:
        return f"GET /api/alerts: {listed.status_code}"
    open_alerts = [a for a in listed.json()["items"] if a["state"] != "cleared"]
    keys = {(a["rule"], a["subject"]) for a in open_alerts}
    for hazard in sorted(present - keys):
        return f"{hazard[0]} on {hazard[1]}: the device reads it, no open alert"
    for station in STATIONS:
        body = http.get(f"/api/stations/{station}").json()
        free = {p["port"]: p["free"] for p in body["ports"]}
        mine = {a["id"] for a in open_alerts if a["subject"].split("/")[0] == station}
        shown = {a["id"] for a in body["alerts"]}
        if mine != shown:
            return f"{station}: open alerts {sorted(mine)} but the station shows {sorted(shown)}"
        for a in open_alerts:
            subject = a["subject"].split("/")
            if subject[0] != station or a["severity"] != "critical":
                continue
            if a["rule"] not in CUT_RULES and a["rule"] != "device_fault":
                continue
            ports = [int(subject[1])] if len(subject) == 2 else list(free)
            for n in ports:
                if free.get(n):
                    return f"{station} port {n} shown free with {a['rule']} {a['state']} open"
        shown_state = {p["port"]: p["state"] for p in body["ports"]}
        for rule, subject in present:
            if rule == "device_fault" and subject.startswith(station + "/"):
                n = int(subject.split("/")[1])
                # `unknown`: a port that never reported, whatever its faults (api/views.py)
                if free.get(n) or shown_state.get(n) not in ("fault", "unknown"):
                    return f"{subject} shown {shown_state.get(n)} while the device reports a fault"
    return None
