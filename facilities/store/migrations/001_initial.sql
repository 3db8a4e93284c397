-- Telemetry, events, availability and quarantine. Times are Unix seconds (REAL, UTC):
-- `ts` is the device's clock, `received_at` the service's.
-- A message is identified by (device, topic, seq, ts) (docs/protocol.md, "Delivery"): each
-- table's primary key is that identity, so a redelivered duplicate is ignored by INSERT OR
-- IGNORE.

CREATE TABLE station_samples (
    station     TEXT NOT NULL,
    ts          REAL NOT NULL,
    seq         INTEGER NOT NULL,
    received_at REAL NOT NULL,
    temp_c      REAL,
    leakage_ma  REAL,
    smoke       INTEGER,
    PRIMARY KEY (station, ts, seq)          -- dedup; history of a station by time range
) STRICT, WITHOUT ROWID;

CREATE TABLE port_samples (
    station     TEXT NOT NULL,
    ts          REAL NOT NULL,
    seq         INTEGER NOT NULL,
    port        INTEGER NOT NULL,
    received_at REAL NOT NULL,
    state       TEXT NOT NULL,
    voltage_v   REAL,
    current_a   REAL,
    power_w     REAL,
    energy_wh   REAL,
    temp_c      REAL,
    PRIMARY KEY (station, ts, seq, port)    -- dedup; a station's messages with their ports
) STRICT, WITHOUT ROWID;
-- latest state of one port, and one port's history by time range (queries name it with
-- INDEXED BY: without ANALYZE statistics the planner would take the primary key)
CREATE INDEX port_samples_by_port ON port_samples (station, port, ts);

CREATE TABLE charging_events (
    station     TEXT NOT NULL,
    ts          REAL NOT NULL,
    seq         INTEGER NOT NULL,
    received_at REAL NOT NULL,
    port        INTEGER,
    type        TEXT NOT NULL,
    code        TEXT,
    PRIMARY KEY (station, ts, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE garage_samples (
    garage      TEXT NOT NULL,
    ts          REAL NOT NULL,
    seq         INTEGER NOT NULL,
    received_at REAL NOT NULL,
    occupancy   INTEGER,
    temp_c      REAL,
    smoke       INTEGER,
    PRIMARY KEY (garage, ts, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE gate_events (
    garage      TEXT NOT NULL,
    gate        TEXT NOT NULL,
    ts          REAL NOT NULL,
    seq         INTEGER NOT NULL,
    received_at REAL NOT NULL,
    type        TEXT NOT NULL,
    credential  TEXT,
    PRIMARY KEY (garage, gate, ts, seq)     -- dedup; a gate's last events
) STRICT, WITHOUT ROWID;
CREATE INDEX gate_events_by_garage ON gate_events (garage, ts);

-- Only changes are stored: a retained `online` heard again after a reconnect is not a change.
CREATE TABLE availability_changes (
    id          INTEGER PRIMARY KEY,
    device_kind TEXT NOT NULL CHECK (device_kind IN ('station', 'garage')),
    device      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('online', 'offline')),
    received_at REAL NOT NULL
) STRICT;
CREATE INDEX availability_by_device ON availability_changes (device, received_at);

CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,              -- cut at 64 KiB
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL
) STRICT;
CREATE INDEX quarantine_by_time ON quarantine (received_at);
