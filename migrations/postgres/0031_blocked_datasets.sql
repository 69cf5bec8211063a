-- As migrations/0031_blocked_datasets.sql.
CREATE TABLE blocked_datasets (
    dataset        TEXT   PRIMARY KEY,
    watch          TEXT   NOT NULL,
    reason         TEXT   NOT NULL,
    since          BIGINT NOT NULL,
    checks         BIGINT NOT NULL DEFAULT 0,
    next_check_at  BIGINT NOT NULL
);
