-- The daily batch budget each watch runs under (issue #20), as the daemon settled it at start
-- and on every reload: the watch's own max_batches_per_day, or the guardrail's 90 when the
-- Catalog tags its dataset Profile-enabled (`profile` = 1), or none (NULL: unlimited). Kept so
-- that `batchdrop status` can say how much of it is used without asking the platform.
CREATE TABLE watch_budgets (
    watch                TEXT    PRIMARY KEY,
    dataset              TEXT    NOT NULL,
    max_batches_per_day  INTEGER,                   -- NULL: no budget
    profile              INTEGER NOT NULL DEFAULT 0, -- 1: the dataset is Profile-enabled
    recorded_at          INTEGER NOT NULL           -- unix ms
);
