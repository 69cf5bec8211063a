-- As migrations/0180_unfinished_by_state.sql.
CREATE INDEX files_unfinished_by_state ON files (state, batch_id, id) WHERE finalized = FALSE;
CREATE INDEX files_pending_destinations ON files (final_path)
    WHERE finalized = FALSE AND final_path IS NOT NULL;
