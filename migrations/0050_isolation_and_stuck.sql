-- Outcomes (#19). A batch made by bisecting a failed batch (`on_batch_failure = "isolate"`)
-- names the batch the bisection started from, so that the extra batches one failure costs can
-- be counted against `isolate_max_extra_batches`.
ALTER TABLE batches ADD COLUMN isolation_root INTEGER;
CREATE INDEX batches_isolation_root ON batches (isolation_root) WHERE isolation_root IS NOT NULL;
-- When a processing batch was first reported stuck (`stalled` on the platform, or processing
-- past `max_processing_age`): the ERROR log is written once, and `status` marks it.
ALTER TABLE batches ADD COLUMN stuck_since INTEGER;
