-- Questions asked all the time about the files still in flight, which without these indexes
-- read every row of the history (profiled in B1, bench/RESULTS.md: with 20,000 files they
-- were a third of the daemon's SQL time):
-- * the archiver's "which files can be finished now" (every pass), and
-- * /metrics' "how old is the oldest pending file" (every scrape).
-- Partial: a finished file leaves both indexes, so their size follows the queue, not history.
CREATE INDEX files_unfinalized ON files (id) WHERE finalized = 0;
CREATE INDEX files_pending_since ON files (discovered_at) WHERE finalized = 0;
-- /metrics' queue depth per (dataset, state): an index-only scan, in group order.
CREATE INDEX files_dataset_state ON files (dataset, state);
