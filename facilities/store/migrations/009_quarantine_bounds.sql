-- Nothing a device sends grows the database without bound (docs/protocol.md, "What happens
-- to bad input"): a quarantined message keeps the first 1 KiB of its payload with the SHA-256
-- (`digest`, migration 006) and the length (`size`) of all of it, and each device (the site's
-- device its topic names; '' for every topic that names none) keeps at most a quota of rows
-- an hour. Past the quota a bad message is only counted: quarantine_over_quota holds one row
-- per device, hour and reason with the messages and bytes counted. Both tables are deleted
-- after their retention (docs/operations.md, "Retention"), as api_requests are.
ALTER TABLE quarantine ADD COLUMN device TEXT NOT NULL DEFAULT '';
ALTER TABLE quarantine ADD COLUMN size INTEGER;
-- Rows from before: their length as kept (cut at 64 KiB then), then cut like new ones.
UPDATE quarantine SET size = length(payload) WHERE size IS NULL;
UPDATE quarantine SET payload = substr(payload, 1, 1024) WHERE length(payload) > 1024;
-- (a cut topic that would make two rows one, topic and digest alike, stays as it was)
UPDATE OR IGNORE quarantine SET topic = substr(topic, 1, 256) WHERE length(topic) > 256;
-- a device's rows of the current hour, counted at start for its quota
CREATE INDEX quarantine_by_device ON quarantine (device, received_at);

CREATE TABLE quarantine_over_quota (
    device      TEXT NOT NULL,
    hour_start  REAL NOT NULL,            -- Unix seconds, a whole hour (server clock)
    reason      TEXT NOT NULL,
    messages    INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,         -- their payloads' lengths, summed
    last_at     REAL NOT NULL,
    PRIMARY KEY (device, hour_start, reason)
) STRICT;
CREATE INDEX quarantine_over_quota_by_time ON quarantine_over_quota (hour_start);
