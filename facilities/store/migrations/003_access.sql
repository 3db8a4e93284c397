-- Residents and staff with their tokens, residents' garages, the API's audit of requests
-- (gate opens, port power), and the first answer to each Idempotency-Key.
-- Times are Unix seconds (REAL, UTC, server clock).

CREATE TABLE people (
    id          TEXT PRIMARY KEY,             -- r-… a resident, s-… staff
    role        TEXT NOT NULL CHECK (role IN ('resident', 'staff')),
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,         -- SHA-256 of the token; the token is never stored
    created_at  REAL NOT NULL,
    revoked_at  REAL
) STRICT;

CREATE TABLE resident_garages (
    person      TEXT NOT NULL REFERENCES people (id),
    garage      TEXT NOT NULL,
    PRIMARY KEY (person, garage)
) STRICT, WITHOUT ROWID;

-- Every gate-open request, allowed or refused, and every staff power request.
CREATE TABLE api_requests (
    id          INTEGER PRIMARY KEY,
    at          REAL NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('gate_open', 'port_power')),
    target      TEXT NOT NULL,                -- g-hc3/north, cs-07/3
    person      TEXT,                         -- null when no valid token came with it
    client      TEXT NOT NULL,                -- the client's address
    status      INTEGER NOT NULL,             -- the HTTP status answered
    outcome     TEXT NOT NULL,                -- opened, refused, timeout, unauthorized, ...
    detail      TEXT,
    command_id  TEXT,
    idempotency_key TEXT
) STRICT;
CREATE INDEX api_requests_by_time ON api_requests (at);

-- A repeated request with the same Idempotency-Key (same person, within 24 h) gets this
-- answer again instead of a second command.
CREATE TABLE idempotency (
    person      TEXT NOT NULL,
    key         TEXT NOT NULL,
    created_at  REAL NOT NULL,
    status      INTEGER NOT NULL,
    body        TEXT NOT NULL,                -- JSON
    PRIMARY KEY (person, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX idempotency_by_time ON idempotency (created_at);
