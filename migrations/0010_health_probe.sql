-- A one-row table that /readyz writes to: proof that the state database takes writes (a full
-- disk or a read-only mount fails it).
CREATE TABLE health_probe (at INTEGER);
