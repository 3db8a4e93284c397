-- A quarantined message is stored once, like telemetry: a bad message the broker redelivers
-- (after a crash, or retained and heard again at every start) is not a second row.
-- Its identity is (topic, SHA-256 of all its bytes): a redelivery carries the very same
-- bytes, two different payloads are never merged, and nothing has to be parsed out of a
-- payload that could not be parsed (docs/protocol.md, "What happens to bad input").
-- Rows from before this migration keep a NULL digest (SQLite cannot hash): they stay as
-- they are, and NULLs never collide in a UNIQUE index.
ALTER TABLE quarantine ADD COLUMN digest BLOB;
CREATE UNIQUE INDEX quarantine_once ON quarantine (topic, digest);
