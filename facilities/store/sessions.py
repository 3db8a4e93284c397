"""Charging sessions, stored as they end."""

from collections.abc import Iterable

from facilities.charging.live import Session
from facilities.store.sql import Connection


async def save_sessions(conn: Connection, sessions: Iterable[Session]) -> None:
    rows = [
        (
            s.station,
            s.port,
            s.started_at.timestamp(),
            s.ended_at.timestamp(),
            s.energy_wh,
            s.peak_w,
            s.end_reason.value,
        )
        for s in sessions
    ]
    if rows:
        await conn.executemany(
            "INSERT OR IGNORE INTO charging_sessions (station, port, started_at, ended_at,"
            " energy_wh, peak_w, end_reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
