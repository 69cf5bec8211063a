-- Fleet mode (issue #22): an instance takes a new batch only while no other live instance
-- drove fewer lately, counted per lease owner at every take (store::fleet,
-- acquire_batch_fairly). SQLite never leases; the index keeps the schemas alike.
CREATE INDEX batches_by_driver ON batches (lease_owner, updated_at) WHERE lease_owner IS NOT NULL;
