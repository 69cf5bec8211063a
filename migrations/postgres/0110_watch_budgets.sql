-- As migrations/0110_watch_budgets.sql (pre-flight, #20).
CREATE TABLE watch_budgets (
    watch                TEXT   PRIMARY KEY,
    dataset              TEXT   NOT NULL,
    max_batches_per_day  BIGINT,
    profile              BIGINT NOT NULL DEFAULT 0,
    recorded_at          BIGINT NOT NULL
);
