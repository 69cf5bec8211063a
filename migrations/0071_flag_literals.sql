-- The queue's queries compare the flags `finalized` and `sent` to FALSE/TRUE instead of 0/1,
-- so that one text runs on SQLite (which reads them as 0/1) and on fleet mode's PostgreSQL
-- (where the flags are BOOLEAN). SQLite uses a partial index only when the query's WHERE
-- names the index's condition the same way, and `finalized = FALSE` is not the same
-- expression as `finalized = 0` to its planner: the two partial indexes of 0021 are made
-- again with the new spelling, or every "files not finished yet" question would read the
-- whole history again (B1 in bench/RESULTS.md). Same rows, same order: nothing else changes.
DROP INDEX files_unfinalized;
DROP INDEX files_pending_since;
CREATE INDEX files_unfinalized ON files (id) WHERE finalized = FALSE;
CREATE INDEX files_pending_since ON files (discovered_at) WHERE finalized = FALSE;
