"""Live-state snapshots (with the marks of what each device counted) and the desired state."""

from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import NamedTuple

from pydantic import TypeAdapter

from facilities.charging.live import StationLive
from facilities.cutoffs import Cutoff, DesiredState
from facilities.garage.state import GarageLive
from facilities.store.rule_names import RuleNames
from facilities.store.sql import Connection

_STATION_STATE = TypeAdapter(StationLive)
_GARAGE_STATE = TypeAdapter(GarageLive)

# (kind, gate, seq, ts, received_at) of a message the live state has counted
Mark = tuple[str, str | None, int, float, float]
LiveRow = tuple[str, str, str, float, str, float | None]
_MARKS = TypeAdapter(list[Mark])


def live_state_row(
    live: StationLive | GarageLive,
    marks: list[Mark],
    now: datetime,
    *,
    counted_until: float | None,
) -> LiveRow:
    """One device's live state as a row to save (timers included), with the marks of the
    messages it has counted and the receive time of the last one, so that a restart carries
    on where it was."""
    marks_json = _MARKS.dump_json(marks).decode()
    if isinstance(live, StationLive):
        state = _STATION_STATE.dump_json(live).decode()
        return (live.station, "station", state, now.timestamp(), marks_json, counted_until)
    state = _GARAGE_STATE.dump_json(live).decode()
    return (live.garage, "garage", state, now.timestamp(), marks_json, counted_until)


async def write_live_state(conn: Connection, rows: list[LiveRow]) -> None:
    if rows:
        await conn.executemany(
            "INSERT INTO live_state (device, kind, state, saved_at, marks, counted_until)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET"
            " state = excluded.state, saved_at = excluded.saved_at, marks = excluded.marks,"
            " counted_until = excluded.counted_until",
            rows,
        )


class Saved(NamedTuple):
    """The last snapshot: each device's live state, when it was saved, its marks, and the
    receive time of the last message it counted (None: saved by an older version)."""

    stations: dict[str, StationLive]
    garages: dict[str, GarageLive]
    saved_at: dict[str, float]
    marks: dict[str, list[Mark]]
    counted_until: dict[str, float | None]


async def load_live_state(conn: Connection) -> Saved:
    saved = Saved({}, {}, {}, {}, {})
    sql = "SELECT device, kind, state, saved_at, marks, counted_until FROM live_state"
    async with conn.execute(sql) as cursor:
        async for device, kind, state, saved_at, marks, counted_until in cursor:
            saved.counted_until[device] = counted_until
            if kind == "station":
                station = _STATION_STATE.validate_json(state).restored()
                saved.stations[station.station] = station
            else:
                garage = _GARAGE_STATE.validate_json(state)
                saved.garages[garage.garage] = garage
            saved.saved_at[device] = float(saved_at)
            saved.marks[device] = _MARKS.validate_json(marks)
    return saved


async def save_cutoffs(
    conn: Connection,
    cutoffs: Iterable[Cutoff],
    *,
    devices: Collection[str] | None = None,
) -> None:
    """Replace the stored desired state (docs/rules.md, "Desired state"): a few rows; with
    `devices` (a partition's), only theirs: the other instances' rows are theirs to keep."""
    if devices is None:
        await conn.execute("DELETE FROM cutoffs")
    else:
        await conn.executemany("DELETE FROM cutoffs WHERE device = ?", [(d,) for d in devices])
    await conn.executemany(
        "INSERT INTO cutoffs (device, port, gate, whole_station, rule, alert_id, subject,"
        " since, held, confirmed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                c.device,
                c.port,
                c.gate,
                c.whole_station,
                c.rule,
                c.alert_id,
                c.subject,
                c.since.timestamp(),
                c.held,
                c.confirmed,
            )
            for c in cutoffs
        ],
    )


async def load_cutoffs(conn: Connection) -> DesiredState:
    """The stored desired state; a cut-off naming a rule this version does not have is
    skipped and logged (`RuleNames`): its alert is not loaded either, so it would not be held."""
    sql = (
        "SELECT device, port, gate, whole_station, rule, alert_id, subject, since, held,"
        " confirmed FROM cutoffs"
    )
    async with conn.execute(sql) as cursor:
        rows = await cursor.fetchall()
    rules = RuleNames("cut-offs")
    cutoffs = [
        Cutoff(
            device=str(r[0]),
            port=r[1],
            gate=r[2],
            whole_station=bool(r[3]),
            rule=rule,
            alert_id=str(r[5]),
            subject=str(r[6]),
            since=datetime.fromtimestamp(r[7], UTC),
            held=bool(r[8]),
            confirmed=bool(r[9]),
        )
        for r in rows
        if (rule := rules.parse(r[4])) is not None
    ]
    rules.report()
    return DesiredState(cutoffs)
