-- The desired state (docs/rules.md, "Desired state"): what the service switched off or opened
-- because of an alert, why and since when; held while the alert is open, listed for staff
-- until the port is back on. Replaced as a whole when it changes (a few rows).
CREATE TABLE cutoffs (
    device        TEXT    NOT NULL,
    port          INTEGER,
    gate          TEXT,
    whole_station INTEGER NOT NULL,
    rule          TEXT    NOT NULL,
    alert_id      TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    since         REAL    NOT NULL,
    held          INTEGER NOT NULL,
    confirmed     INTEGER NOT NULL
) STRICT;
