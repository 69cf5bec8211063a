-- As migrations/0050_isolation_and_stuck.sql (outcomes, #19).
ALTER TABLE batches ADD COLUMN isolation_root BIGINT;
CREATE INDEX batches_isolation_root ON batches (isolation_root) WHERE isolation_root IS NOT NULL;
ALTER TABLE batches ADD COLUMN stuck_since BIGINT;
