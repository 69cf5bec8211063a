-- Fleet mode's coordination (see migrations/0070_fleet.sql for what each table is for).
CREATE TABLE instances (
    id            TEXT   PRIMARY KEY,
    host          TEXT   NOT NULL,
    pid           BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);
CREATE TABLE file_claims (
    watch       TEXT   NOT NULL,
    rel_path    TEXT   NOT NULL,
    dev         BIGINT NOT NULL,
    ino         BIGINT NOT NULL,
    size        BIGINT NOT NULL,
    mtime_ns    BIGINT NOT NULL,
    owner       TEXT   NOT NULL,
    claimed_at  BIGINT NOT NULL,
    PRIMARY KEY (watch, rel_path, dev, ino, size, mtime_ns)
);
ALTER TABLE batches ADD COLUMN lease_owner TEXT;
ALTER TABLE batches ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN lease_expires_at BIGINT;
-- Takeover looks for expired leases of batches in flight.
CREATE INDEX batches_lease ON batches (lease_expires_at) WHERE lease_owner IS NOT NULL;
CREATE TABLE scan_leases (
    watch       TEXT   PRIMARY KEY,
    owner       TEXT   NOT NULL,
    epoch       BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
