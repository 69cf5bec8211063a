-- Datasets the platform said do not exist (or are not visible in the configured sandbox) when
-- batchdrop tried to use them. That is a configuration problem, not a property of any file:
-- the watches of a blocked dataset take no new batches, its batches in flight wait (they are
-- not due while the block lasts), and nothing is failed. The daemon asks the Catalog again
-- at `next_check_at` (5 s, doubling to 5 min) and lifts the block once the dataset exists; a
-- config reload lifts every block. Kept here so that `batchdrop status` and `/readyz` see it
-- and a restart keeps it.
CREATE TABLE blocked_datasets (
    dataset        TEXT    PRIMARY KEY,
    watch          TEXT    NOT NULL,              -- the watch whose batch found it missing
    reason         TEXT    NOT NULL,              -- the platform's refusal, for the operator
    since          INTEGER NOT NULL,              -- unix ms
    checks         INTEGER NOT NULL DEFAULT 0,    -- Catalog checks since, that found it missing
    next_check_at  INTEGER NOT NULL               -- unix ms
);
