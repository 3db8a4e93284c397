-- Alerts, their history, the commands sent for them, charging sessions, and the live state
-- the rules need to survive a restart (timers such as charge_complete's 120 min).
-- Times are Unix seconds (REAL, UTC, server clock).

CREATE TABLE alerts (
    id              TEXT PRIMARY KEY,
    rule            TEXT NOT NULL,
    subject         TEXT NOT NULL,
    severity        TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state           TEXT NOT NULL CHECK (state IN ('active', 'acknowledged', 'cleared')),
    raised_at       REAL NOT NULL,
    updated_at      REAL NOT NULL,
    cleared_at      REAL,
    value           REAL,
    peak            REAL,
    count           INTEGER NOT NULL,
    clear_since     REAL,
    acknowledged_by TEXT,
    acknowledged_at REAL
) STRICT;
-- at most one open alert per (rule, subject)
CREATE UNIQUE INDEX alerts_open ON alerts (rule, subject) WHERE state != 'cleared';
CREATE INDEX alerts_by_time ON alerts (raised_at);

CREATE TABLE alert_events (
    id        INTEGER PRIMARY KEY,
    alert_id  TEXT NOT NULL REFERENCES alerts (id),
    change    TEXT NOT NULL,
    at        REAL NOT NULL,
    severity  TEXT NOT NULL,
    state     TEXT NOT NULL,
    value     REAL
) STRICT;
CREATE INDEX alert_events_by_alert ON alert_events (alert_id, at);

-- Every command and its outcome: the audit trail of what the service did to devices.
CREATE TABLE commands (
    id          TEXT PRIMARY KEY,
    device      TEXT NOT NULL,
    port        INTEGER,
    gate        TEXT,
    action      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    requested_by TEXT NOT NULL,          -- 'rules' or who asked (staff, a resident)
    alert_id    TEXT,                     -- the alert it acts on (no FK: the command goes out first)
    sent_at     REAL NOT NULL,
    tries       INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('pending', 'acked', 'refused', 'timeout')),
    error       TEXT,
    done_at     REAL
) STRICT;
CREATE INDEX commands_by_time ON commands (sent_at);
CREATE INDEX commands_by_alert ON commands (alert_id);

CREATE TABLE charging_sessions (
    id          INTEGER PRIMARY KEY,
    station     TEXT NOT NULL,
    port        INTEGER NOT NULL,
    started_at  REAL NOT NULL,
    ended_at    REAL NOT NULL,
    energy_wh   REAL NOT NULL,
    peak_w      REAL NOT NULL,
    end_reason  TEXT NOT NULL
        CHECK (end_reason IN ('unplug', 'full', 'no_load', 'overload', 'remote', 'too_long', 'fault')),
    UNIQUE (station, port, started_at)
) STRICT;
CREATE INDEX sessions_by_station ON charging_sessions (station, started_at);

CREATE TABLE live_state (
    device      TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('station', 'garage')),
    state       TEXT NOT NULL,            -- JSON
    saved_at    REAL NOT NULL
) STRICT;
