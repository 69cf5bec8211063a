-- As migrations/0120_batch_sandbox.sql (per-watch sandbox, #21).
ALTER TABLE batches ADD COLUMN sandbox TEXT;
