-- As migrations/0060_validated.sql (pre-flight, #20). An integer flag, not BOOLEAN: the store
-- reads it as an integer and sets it to 1.
ALTER TABLE files ADD COLUMN validated BIGINT NOT NULL DEFAULT 0;
