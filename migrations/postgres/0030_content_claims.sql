-- As migrations/0030_content_claims.sql (the one-copy-per-content rule, kept in the store so
-- that it holds for every writer of a shared database).
CREATE TABLE content_claims (
    dataset  TEXT   NOT NULL,
    sha256   TEXT   NOT NULL,
    file_id  BIGINT NOT NULL REFERENCES files(id),
    PRIMARY KEY (dataset, sha256)
);
ALTER TABLE files ADD COLUMN waits_for BIGINT REFERENCES files(id);
ALTER TABLE files ADD COLUMN records BIGINT;
CREATE INDEX files_waiting ON files (waits_for) WHERE waits_for IS NOT NULL;
