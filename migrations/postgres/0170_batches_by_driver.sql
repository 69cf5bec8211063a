-- The batches an instance drove, counted at every take of a new batch (see
-- migrations/0170_batches_by_driver.sql).
CREATE INDEX batches_by_driver ON batches (lease_owner, updated_at) WHERE lease_owner IS NOT NULL;
