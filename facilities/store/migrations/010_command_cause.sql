-- Which device message made a rule send a command (docs/security.md): its kind, the device
-- of its topic and its identity as stored, e.g. `garage_telemetry g-hc3 seq 41 ts
-- 1764400301.000`. NULL: the server's clock (a timer, silence), or a person's request
-- (`requested_by` says who). Kept in the outbox too, for a command sent again at start.
ALTER TABLE commands ADD COLUMN cause TEXT;
ALTER TABLE command_outbox ADD COLUMN cause TEXT;
