-- As migrations/0021_unfinalized_indexes.sql.
CREATE INDEX files_unfinalized ON files (id) WHERE finalized = FALSE;
CREATE INDEX files_pending_since ON files (discovered_at) WHERE finalized = FALSE;
CREATE INDEX files_dataset_state ON files (dataset, state);
