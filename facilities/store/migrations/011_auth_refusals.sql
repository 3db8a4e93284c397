-- Requests refused for want of a valid token (401, and 429 past the failed-authentication
-- limit) on routes that need one, and a token holder's refusals past the first few in a
-- minute: one row per minute, client address, person, route and outcome, with how many there
-- were (docs/api.md, "Refusals"). A flood of bogus requests is a few rows written in a batch
-- every few seconds, not a row and a commit each.
CREATE TABLE auth_refusals (
    id          INTEGER PRIMARY KEY,
    minute      REAL NOT NULL,                -- start of the minute, Unix seconds
    client      TEXT NOT NULL,                -- the client's address; `others` past the cap
    person      TEXT NOT NULL DEFAULT '',     -- the token's holder; '' without a valid token
    route       TEXT NOT NULL,                -- method and route template
    status      INTEGER NOT NULL,             -- 401 or 429
    outcome     TEXT NOT NULL,                -- unauthorized, rate_limited
    count       INTEGER NOT NULL,
    last_at     REAL NOT NULL,                -- the last of them
    UNIQUE (minute, client, person, route, outcome)
) STRICT;
CREATE INDEX auth_refusals_by_time ON auth_refusals (minute);
