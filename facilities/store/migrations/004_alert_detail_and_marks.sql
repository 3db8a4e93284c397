-- Why an alert changed when no rule said so (e.g. its device was removed from the site file).
ALTER TABLE alert_events ADD COLUMN detail TEXT;

-- The duplicate filter's marks (kind, gate, seq, ts, received_at) of the messages a snapshot
-- of the live state already counted: saved with the state they are in, so that a message
-- counted before a restart is not counted again when it comes back (docs/architecture.md).
ALTER TABLE live_state ADD COLUMN marks TEXT NOT NULL DEFAULT '[]';
-- The receive time of the last message a device's saved state counted: messages are counted
-- in the order they are received, so what was stored from then on is what it lacks.
ALTER TABLE live_state ADD COLUMN counted_until REAL;
