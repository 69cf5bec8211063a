-- As migrations/0100_staged_files.sql.
CREATE TABLE staged_files (
    file_id          BIGINT PRIMARY KEY,
    path             TEXT   NOT NULL,
    name             TEXT   NOT NULL,
    format           TEXT   NOT NULL,
    dev              BIGINT NOT NULL,
    ino              BIGINT NOT NULL,
    size             BIGINT NOT NULL,
    mtime_ns         BIGINT NOT NULL,
    sha256           TEXT   NOT NULL,
    original_sha256  TEXT   NOT NULL,
    original_format  TEXT   NOT NULL,
    mapping_path     TEXT   NOT NULL,
    mapping_sha256   TEXT   NOT NULL,
    records_in       BIGINT NOT NULL,
    records_out      BIGINT NOT NULL,
    rejected         BIGINT NOT NULL,
    rejected_json    TEXT   NOT NULL,
    staged_at        BIGINT NOT NULL
);
