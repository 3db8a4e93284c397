-- An Idempotency-Key belongs to one request (docs/api.md, "Opening a gate"): the gate it
-- opened is kept with its answer, and the same key for another gate is refused (409) instead
-- of answered with the first gate's result. Keys kept from before this migration have no
-- target: reused within their 24 h they are refused too (nothing is sent either way).
ALTER TABLE idempotency ADD COLUMN target TEXT;
