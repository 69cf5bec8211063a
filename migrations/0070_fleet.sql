-- Fleet mode (issue #22): several daemons sharing one PostgreSQL database take work through
-- it. These tables and columns are used by the PostgreSQL backend only (src/store/fleet.rs);
-- a single daemon on SQLite holds everything by its state-dir lock and leaves them empty.
-- They are here too so that both backends describe one schema (tests/fleet.rs).
--
-- * `instances`: one row per running daemon, its heartbeat in database-clock unix ms.
-- * `file_claims`: a file version is taken by exactly one instance: the primary key is the
--   folder (watch), the path below it and the file's identity (dev, ino, size, mtime).
-- * `batches.lease_*`: the one instance driving a batch, until `lease_expires_at`; every
--   state change of a leased batch is conditioned on owner and epoch, and a takeover after
--   expiry bumps the epoch, so a paused former owner can change nothing once it wakes.
-- * `scan_leases`: the one instance scanning each watch (the others claim and upload).
CREATE TABLE instances (
    id            TEXT    PRIMARY KEY,
    host          TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    heartbeat_at  INTEGER NOT NULL
);
CREATE TABLE file_claims (
    watch       TEXT    NOT NULL,
    rel_path    TEXT    NOT NULL,
    dev         INTEGER NOT NULL,
    ino         INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    owner       TEXT    NOT NULL,
    claimed_at  INTEGER NOT NULL,
    PRIMARY KEY (watch, rel_path, dev, ino, size, mtime_ns)
);
ALTER TABLE batches ADD COLUMN lease_owner TEXT;
ALTER TABLE batches ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN lease_expires_at INTEGER;
CREATE TABLE scan_leases (
    watch       TEXT    PRIMARY KEY,
    owner       TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
