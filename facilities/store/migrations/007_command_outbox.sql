-- The rules' commands that are not finished (not sent yet, or sent and not answered): a
-- restart sends each again with the same id while its alert is open (docs/rules.md, "What
-- survives a restart"). A row goes when the command's outcome is stored.
CREATE TABLE command_outbox (
    id          TEXT PRIMARY KEY,         -- the command's id: kept when it is sent again
    device      TEXT NOT NULL,
    port        INTEGER,
    gate        TEXT,
    action      TEXT NOT NULL,
    reason      TEXT NOT NULL,            -- the rule
    alert_id    TEXT NOT NULL,            -- the alert it acts on (sent again while it is open)
    queued_at   REAL NOT NULL
) STRICT;

-- `abandoned`: a command the service stopped waiting for when it stopped, and did not send
-- again (its alert had closed, or a person asked for it and got no answer). SQLite cannot
-- change a CHECK in place: the table is rebuilt with the same columns and indexes.
CREATE TABLE commands_v5 (
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
    outcome     TEXT NOT NULL
        CHECK (outcome IN ('pending', 'acked', 'refused', 'timeout', 'abandoned')),
    error       TEXT,
    done_at     REAL
) STRICT;
INSERT INTO commands_v5 SELECT * FROM commands;
DROP TABLE commands;
ALTER TABLE commands_v5 RENAME TO commands;
CREATE INDEX commands_by_time ON commands (sent_at);
CREATE INDEX commands_by_alert ON commands (alert_id);

-- The rules' commands left pending by an older version are unfinished too.
INSERT INTO command_outbox (id, device, port, gate, action, reason, alert_id, queued_at)
SELECT id, device, port, gate, action, reason, alert_id, sent_at FROM commands
WHERE outcome = 'pending' AND requested_by = 'rules' AND alert_id IS NOT NULL;
