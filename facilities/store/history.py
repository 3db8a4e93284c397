"""What staff read back: alerts with the commands sent for them, sessions, telemetry."""

import json
from collections import defaultdict
from dataclasses import dataclass, field

from facilities.store.sql import Connection


@dataclass(frozen=True, slots=True)
class CommandRow:
    command_id: str
    action: str
    target: str
    outcome: str
    tries: int
    sent_at: float
    done_at: float | None
    error: str | None
    requested_by: str
    cause: str | None


@dataclass(frozen=True, slots=True)
class AlertRow:
    rowid: int
    id: str
    rule: str
    subject: str
    severity: str
    state: str
    raised_at: float
    updated_at: float
    cleared_at: float | None
    value: float | None
    peak: float | None
    count: int
    acknowledged_by: str | None
    acknowledged_at: float | None
    actions: list[CommandRow] = field(default_factory=list)


_ALERTS = """
SELECT rowid, id, rule, subject, severity, state, raised_at, updated_at, cleared_at, value,
       peak, count, acknowledged_by, acknowledged_at
FROM alerts
WHERE (:id IS NULL OR id = :id)
  AND (:state IS NULL OR state = :state)
  AND (:severity IS NULL OR severity = :severity)
  AND updated_at >= :since AND rowid < :before
ORDER BY rowid DESC
LIMIT :limit
"""

_ACTIONS = """
SELECT alert_id, id, action, device || coalesce('/' || gate, '/' || port, ''), outcome, tries,
       sent_at, done_at, error, requested_by, cause
FROM commands
WHERE alert_id IN (SELECT value FROM json_each(:ids))
ORDER BY sent_at
"""


async def alerts_page(
    conn: Connection,
    *,
    state: str | None = None,
    severity: str | None = None,
    since: float | None = None,
    before: int | None = None,
    limit: int = 1,
    alert_id: str | None = None,
) -> list[AlertRow]:
    """Alerts newest first (`before`: continue below this rowid), with their commands."""
    params = {
        "id": alert_id,
        "state": state,
        "severity": severity,
        "since": since if since is not None else float("-inf"),
        "before": before if before is not None else 2**63 - 1,
        "limit": limit,
    }
    async with conn.execute(_ALERTS, params) as cursor:
        alerts = [AlertRow(*row) for row in await cursor.fetchall()]
    if alerts:
        found: dict[str, list[CommandRow]] = defaultdict(list)
        ids = json.dumps([a.id for a in alerts])
        async with conn.execute(_ACTIONS, {"ids": ids}) as cursor:
            for alert_id_, *rest in await cursor.fetchall():
                found[alert_id_].append(CommandRow(*rest))
        for alert in alerts:
            alert.actions.extend(found.get(alert.id, []))
    return alerts


async def alert_by_id(conn: Connection, alert_id: str) -> AlertRow | None:
    found = await alerts_page(conn, alert_id=alert_id)
    return found[0] if found else None


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: int
    port: int
    started_at: float
    ended_at: float
    energy_wh: float
    peak_w: float
    end_reason: str


async def sessions_page(
    conn: Connection,
    station: str,
    *,
    start: float,
    end: float,
    after: int | None,
    limit: int,
) -> list[SessionRow]:
    """A station's sessions that started in [start, end), oldest first."""
    async with conn.execute(
        "SELECT id, port, started_at, ended_at, energy_wh, peak_w, end_reason"
        " FROM charging_sessions WHERE station = ? AND started_at >= ? AND started_at < ?"
        " AND id > ? ORDER BY started_at, id LIMIT ?",
        (station, start, end, after or 0, limit),
    ) as cursor:
        return [SessionRow(*row) for row in await cursor.fetchall()]


@dataclass(frozen=True, slots=True)
class PortSample:
    port: int
    state: str
    voltage_v: float | None
    current_a: float | None
    power_w: float | None
    energy_wh: float | None
    temp_c: float | None


@dataclass(frozen=True, slots=True)
class StationSample:
    seq: int
    ts: float
    received_at: float
    temp_c: float | None
    leakage_ma: float | None
    smoke: bool | None
    ports: list[PortSample] = field(default_factory=list)


async def telemetry_page(
    conn: Connection,
    station: str,
    *,
    start: float,
    end: float,
    port: int | None,
    after: tuple[float, int] | None,
    limit: int,
) -> list[StationSample]:
    """A station's messages with `ts` in [start, end), oldest first, each with its ports."""
    ts, seq = after or (float("-inf"), -1)
    async with conn.execute(
        "SELECT seq, ts, received_at, temp_c, leakage_ma, smoke FROM station_samples"
        " WHERE station = ? AND ts >= ? AND ts < ? AND (ts, seq) > (?, ?)"
        " ORDER BY ts, seq LIMIT ?",
        (station, start, end, ts, seq, limit),
    ) as cursor:
        samples = [
            StationSample(s, t, r, temp, leak, None if smoke is None else bool(smoke))
            for s, t, r, temp, leak, smoke in await cursor.fetchall()
        ]
    if not samples:
        return samples
    by_message = {(s.ts, s.seq): s for s in samples}
    async with conn.execute(
        "SELECT ts, seq, port, state, voltage_v, current_a, power_w, energy_wh, temp_c"
        " FROM port_samples WHERE station = ? AND ts >= ? AND ts <= ?"
        " AND (? IS NULL OR port = ?) ORDER BY ts, seq, port",
        (station, samples[0].ts, samples[-1].ts, port, port),
    ) as cursor:
        for t, s, *reading in await cursor.fetchall():
            sample = by_message.get((t, s))
            if sample is not None:
                sample.ports.append(PortSample(*reading))
    return samples


@dataclass(frozen=True, slots=True)
class Bucket:
    start: float
    port: int
    samples: int
    avg_power_w: float | None
    max_power_w: float | None
    last_state: str


# One row per (bucket, port): readings counted, average and peak power, and the state of the
# bucket's last reading (the largest (ts, seq)). Readings come from port_samples while they
# are kept and from the 5-minute summaries retention moved them into after (port_buckets,
# facilities/store/retention.py): each reading is in one of the two, moved in one
# transaction, so both are read in one statement and added up, whatever was moved when. A
# summary counts in the bucket of its start, when its start is in [start, end). Device times
# are positive (docs/protocol.md, "Payload rules the service enforces"), so the integer cast
# floors.
_BUCKETS = """
WITH readings AS (
    SELECT CAST(ts / :step AS INTEGER) AS bucket, port, 1 AS samples,
           CASE WHEN power_w IS NULL THEN 0 ELSE 1 END AS power_n, power_w AS power_sum,
           power_w AS max_power_w,
           ts AS last_ts, seq AS last_seq, state AS last_state
    FROM port_samples
    WHERE station = :station AND ts >= :start AND ts < :end
      AND (:port IS NULL OR port = :port)
    UNION ALL
    SELECT CAST(start / :step AS INTEGER), port, samples, power_n, power_sum, max_power_w,
           last_ts, last_seq, last_state
    FROM port_buckets
    WHERE station = :station AND start >= :start AND start < :end
      AND (:port IS NULL OR port = :port)
)
SELECT bucket * :step, port, sum(samples), sum(power_sum) / sum(power_n), max(max_power_w),
       max(last_state)
FROM (
    SELECT bucket, port, samples, power_n, power_sum, max_power_w,
           last_value(last_state) OVER (
               PARTITION BY bucket, port ORDER BY last_ts, last_seq
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
           ) AS last_state
    FROM readings
) AS latest
GROUP BY bucket, port
HAVING (bucket, port) > (:after_bucket, :after_port)
ORDER BY bucket, port
LIMIT :limit
"""


async def telemetry_buckets(
    conn: Connection,
    station: str,
    *,
    start: float,
    end: float,
    step_s: float,
    port: int | None,
    after: tuple[float, int] | None,
    limit: int,
) -> list[Bucket]:
    """Downsampled history: per port and per `step_s` bucket, oldest first, from the raw
    readings and, where they have expired, from their 5-minute summaries."""
    after_bucket = int(after[0] // step_s) if after else -(2**62)
    params = {
        "station": station,
        "start": start,
        "end": end,
        "step": step_s,
        "after_bucket": after_bucket,
        "after_port": after[1] if after else -1,
        "limit": limit,
        "port": port,
    }
    async with conn.execute(_BUCKETS, params) as cursor:
        return [Bucket(*row) for row in await cursor.fetchall()]


async def charge_durations(conn: Connection, *, since: float) -> dict[str, list[float]]:
    """Durations (seconds) of the sessions that ended full or unplugged since `since`, per
    station: what a free-time estimate is made of when a port reports no power."""
    found: dict[str, list[float]] = defaultdict(list)
    async with conn.execute(
        "SELECT station, ended_at - started_at FROM charging_sessions"
        " WHERE ended_at >= ? AND end_reason IN ('full', 'unplug')",
        (since,),
    ) as cursor:
        for station, seconds in await cursor.fetchall():
            found[station].append(float(seconds))
    return found


async def charge_energies(conn: Connection, *, since: float) -> dict[str, list[float]]:
    """Energy (Wh) of the sessions that ended full or unplugged since `since`, per station:
    what a battery typically takes here (its charge's estimate is made of it)."""
    found: dict[str, list[float]] = defaultdict(list)
    async with conn.execute(
        "SELECT station, energy_wh FROM charging_sessions"
        " WHERE ended_at >= ? AND end_reason IN ('full', 'unplug') AND energy_wh > 0",
        (since,),
    ) as cursor:
        for station, energy in await cursor.fetchall():
            found[station].append(float(energy))
    return found
