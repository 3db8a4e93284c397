-- Telemetry is bounded (docs/operations.md, "Retention"): raw messages are kept for days, and
-- before they are deleted each port's readings are summed up per 5 minutes of device time,
-- kept for charts far longer. A summary is moved in the transaction that deletes its raw
-- rows, so every reading is counted once: in port_samples or here, never both or neither.
-- A reading that comes back for a summed-up bucket (a backlog of old device time) is added
-- to it: every column can be added to (counts, sums) or compared (peak, last).
CREATE TABLE port_buckets (
    station     TEXT NOT NULL,
    start       REAL NOT NULL,            -- device time, a multiple of 300 s
    port        INTEGER NOT NULL,
    samples     INTEGER NOT NULL,         -- readings summed up
    power_n     INTEGER NOT NULL,         -- of them with a power_w (avg = power_sum / power_n)
    power_sum   REAL,
    max_power_w REAL,
    last_ts     REAL NOT NULL,            -- the bucket's last reading: its identity and state
    last_seq    INTEGER NOT NULL,
    last_state  TEXT NOT NULL,
    updated_at  REAL NOT NULL,            -- server time of the last addition (see retention.py)
    PRIMARY KEY (station, start, port)    -- a station's buckets by time range
) STRICT, WITHOUT ROWID;
