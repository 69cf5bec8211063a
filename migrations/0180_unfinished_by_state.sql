-- The archiver's two questions at every page of its pass, which walked every unfinished file
-- (the whole queue: ready files too) through `files_unfinalized`, so that a backlog made each
-- pass cost as much as the queue was long (bench/RESULTS.md, issue #23's B4 at 1,000,000):
-- * which files can be finished now: the failed and duplicate ones, and those of the terminal
--   batches (store::outcome, `files_to_finalize`: looked up per batch, by state), and
-- * which destinations are promised to files not moved yet (`pending_destinations`).
-- Partial, so their size follows the unfinished files, not history. `finalized = FALSE` is
-- spelled as the queries spell it: SQLite uses a partial index only for a query whose WHERE
-- clause repeats its condition.
CREATE INDEX files_unfinished_by_state ON files (state, batch_id, id) WHERE finalized = FALSE;
CREATE INDEX files_pending_destinations ON files (final_path)
    WHERE finalized = FALSE AND final_path IS NOT NULL;
