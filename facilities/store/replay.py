"""Messages stored after the last live-state snapshot, rebuilt for the rules to replay."""

import heapq
import logging
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from facilities.charging.payloads import PortReading, StationEvent, StationTelemetry
from facilities.garage.payloads import GarageTelemetry, GateEvent
from facilities.messages import Accepted, MessageKind, Route
from facilities.store.sql import Connection
from facilities.wire import Availability

log = logging.getLogger(__name__)

# A device's `ts` may be this far from the receive time and still be stored: rows are found
# by (device, ts) on the primary keys, so the search starts this much earlier (a day covers
# any clock the clock_skew alert has not made someone fix, and costs an index range only).
TS_MARGIN_S = 86_400.0


async def stored_since(
    conn: Connection,
    since: Mapping[str, float],
    *,
    garages: Iterable[str],
) -> list[Accepted]:
    """Every message of each device received from `since[device]` on (Unix seconds), as the
    decoder made it, in the order they were received."""
    garage_ids = set(garages)
    streams = []
    for device, after in since.items():
        if device in garage_ids:
            streams.append(await _garage(conn, device, after))
        else:
            streams.append(await _station(conn, device, after))
        streams.append(await _availability(conn, device, after, garage=device in garage_ids))
    merged = heapq.merge(*streams, key=lambda m: m.received_at)
    return list(merged)


M = TypeVar("M", bound=BaseModel)


def _valid(model: type[M], row: dict[str, Any]) -> M | None:
    """A stored row as its payload again; None (logged) if it no longer validates (a row
    stored by an older version): the replay goes on without it."""
    try:
        return model.model_validate(row, strict=False)
    except ValidationError as exc:
        log.warning("not replayed: a stored %s that no longer validates: %s", model.__name__, exc)
        return None


async def _rows(conn: Connection, sql: str, *params: object) -> list[tuple[Any, ...]]:
    async with conn.execute(sql, params) as cursor:
        return [tuple(row) for row in await cursor.fetchall()]


async def _station(conn: Connection, station: str, after: float) -> list[Accepted]:
    from_ts = after - TS_MARGIN_S
    ports = await _port_readings(conn, station, from_ts, after)
    out = await _station_telemetry(conn, station, from_ts, after, ports)
    event = Route(MessageKind.STATION_EVENT, station)
    for ts, seq, received, port, kind, code in await _rows(
        conn,
        "SELECT ts, seq, received_at, port, type, code FROM charging_events"
        " WHERE station = ? AND ts > ? AND received_at >= ?",
        station,
        from_ts,
        after,
    ):
        happened = _valid(
            StationEvent, {"seq": seq, "ts": ts, "type": kind, "port": port, "code": code}
        )
        if happened is not None:
            out.append(Accepted(event, happened, float(received)))
    return sorted(out, key=lambda m: m.received_at)


async def _port_readings(
    conn: Connection, station: str, from_ts: float, after: float
) -> dict[tuple[float, int], list[PortReading]]:
    """The ports of each stored telemetry message, by its (ts, seq)."""
    ports: dict[tuple[float, int], list[PortReading]] = {}
    for ts, seq, port, state, voltage, current, power, energy, temp in await _rows(
        conn,
        "SELECT ts, seq, port, state, voltage_v, current_a, power_w, energy_wh, temp_c"
        " FROM port_samples WHERE station = ? AND ts > ? AND received_at >= ?"
        " ORDER BY port",
        station,
        from_ts,
        after,
    ):
        reading = _valid(
            PortReading,
            {
                "port": port,
                "state": state,
                "voltage_v": voltage,
                "current_a": current,
                "power_w": power,
                "energy_wh": energy,
                "temp_c": temp,
            },
        )
        if reading is not None:
            ports.setdefault((float(ts), int(seq)), []).append(reading)
    return ports


async def _station_telemetry(
    conn: Connection,
    station: str,
    from_ts: float,
    after: float,
    ports: Mapping[tuple[float, int], list[PortReading]],
) -> list[Accepted]:
    out = []
    telemetry = Route(MessageKind.STATION_TELEMETRY, station)
    for ts, seq, received, temp, leakage, smoke in await _rows(
        conn,
        "SELECT ts, seq, received_at, temp_c, leakage_ma, smoke FROM station_samples"
        " WHERE station = ? AND ts > ? AND received_at >= ?",
        station,
        from_ts,
        after,
    ):
        payload = _valid(
            StationTelemetry,
            {
                "seq": seq,
                "ts": ts,
                "temp_c": temp,
                "leakage_ma": leakage,
                "smoke": None if smoke is None else bool(smoke),
                "ports": ports.get((float(ts), int(seq)), []),
            },
        )
        if payload is not None:
            out.append(Accepted(telemetry, payload, float(received)))
    return out


async def _garage(conn: Connection, garage: str, after: float) -> list[Accepted]:
    from_ts = after - TS_MARGIN_S
    out = []
    telemetry = Route(MessageKind.GARAGE_TELEMETRY, garage)
    for ts, seq, received, occupancy, temp, smoke in await _rows(
        conn,
        "SELECT ts, seq, received_at, occupancy, temp_c, smoke FROM garage_samples"
        " WHERE garage = ? AND ts > ? AND received_at >= ?",
        garage,
        from_ts,
        after,
    ):
        payload = _valid(
            GarageTelemetry,
            {
                "seq": seq,
                "ts": ts,
                "occupancy": occupancy,
                "temp_c": temp,
                "smoke": None if smoke is None else bool(smoke),
            },
        )
        if payload is not None:
            out.append(Accepted(telemetry, payload, float(received)))
    for gate, ts, seq, received, kind, credential in await _rows(
        conn,
        "SELECT gate, ts, seq, received_at, type, credential FROM gate_events"
        " INDEXED BY gate_events_by_garage WHERE garage = ? AND ts > ? AND received_at >= ?",
        garage,
        from_ts,
        after,
    ):
        gate_event = _valid(
            GateEvent, {"seq": seq, "ts": ts, "type": kind, "credential": credential}
        )
        if gate_event is not None:
            route = Route(MessageKind.GATE_EVENT, garage, str(gate))
            out.append(Accepted(route, gate_event, float(received)))
    return sorted(out, key=lambda m: m.received_at)


async def _availability(
    conn: Connection, device: str, after: float, *, garage: bool
) -> list[Accepted]:
    kind = MessageKind.GARAGE_AVAILABILITY if garage else MessageKind.STATION_AVAILABILITY
    rows = await _rows(
        conn,
        "SELECT status, received_at FROM availability_changes"
        " WHERE device = ? AND received_at >= ? ORDER BY received_at",
        device,
        after,
    )
    return [
        Accepted(Route(kind, device), Availability(str(status)), float(received))
        for status, received in rows
    ]
