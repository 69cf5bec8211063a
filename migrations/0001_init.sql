-- batchdrop's state: the queue of files, the batches they travel in, and the history of both.
-- SQLite is the only queue: every stage reads its work from here and records its result here.

-- One row per file version that became ready in a drop folder.
CREATE TABLE files (
    id              INTEGER PRIMARY KEY,
    watch           TEXT    NOT NULL,             -- the watch's name (its folder, as configured)
    dataset         TEXT    NOT NULL,
    format          TEXT    NOT NULL CHECK (format IN ('json', 'csv', 'parquet')),
    multiline_json  INTEGER NOT NULL DEFAULT 0,
    root            TEXT    NOT NULL,             -- absolute path of the watched folder
    rel_path        TEXT    NOT NULL,             -- path below root, '/'-separated; the uploaded name
    dev             INTEGER NOT NULL,
    ino             INTEGER NOT NULL,
    size            INTEGER NOT NULL,
    mtime_ns        INTEGER NOT NULL,
    sha256          TEXT,                         -- known once the file was read (for upload or dedup)
    state           TEXT    NOT NULL CHECK (state IN
                       ('ready', 'batched', 'uploaded', 'done', 'failed', 'duplicate', 'superseded')),
    batch_id        INTEGER REFERENCES batches(id),
    uploaded_bytes  INTEGER NOT NULL DEFAULT 0,   -- acknowledged prefix (large files: chunk by chunk)
    sent            INTEGER NOT NULL DEFAULT 0,   -- intent: bytes of it may have reached its batch
    duplicate_of    INTEGER REFERENCES files(id),
    replay_json     TEXT,                         -- predecessors requested by a .replay sidecar
    sidecar         TEXT,                         -- rel_path of that sidecar, archived with the file
    reason          TEXT,                         -- why the file failed, for the receipt
    final_path      TEXT,                         -- where the file went (archive or failed folder)
    finalized       INTEGER NOT NULL DEFAULT 0,   -- 1 once moved/deleted and its receipt written
    discovered_at   INTEGER NOT NULL,             -- unix ms
    updated_at      INTEGER NOT NULL
);
CREATE INDEX files_state ON files (state, watch);
CREATE INDEX files_batch ON files (batch_id);
CREATE INDEX files_path ON files (watch, rel_path);
CREATE INDEX files_sha ON files (dataset, sha256);

-- One row per batch. `state` doubles as the intent log of the remote side effects: a row is moved
-- to 'creating' before create-batch is sent and to 'loading' (with remote_id) once it answered,
-- to 'completing' before COMPLETE and to 'processing' after; a crash in between is resolved on
-- start-up by asking the platform (externalId lookup, HEAD, repeated COMPLETE).
CREATE TABLE batches (
    id              INTEGER PRIMARY KEY,
    external_id     TEXT    NOT NULL UNIQUE,      -- idempotency key, chosen before create-batch
    remote_id       TEXT UNIQUE,                  -- the platform's batch id
    watch           TEXT    NOT NULL,
    dataset         TEXT    NOT NULL,
    format          TEXT    NOT NULL,
    multiline_json  INTEGER NOT NULL DEFAULT 0,
    replay_json     TEXT,                         -- JSON array of predecessor remote ids
    state           TEXT    NOT NULL CHECK (state IN
                       ('sealed', 'creating', 'loading', 'completing', 'processing',
                        'success', 'failed', 'aborted', 'abandoned', 'reverted')),
    attempts        INTEGER NOT NULL DEFAULT 0,   -- consecutive transient failures
    next_attempt_at INTEGER NOT NULL DEFAULT 0,   -- unix ms; retry schedule survives restarts
    first_error_at  INTEGER,
    last_error      TEXT,
    outcome_json    TEXT,                         -- the Catalog's final view (metrics, errors)
    replaced_by     TEXT,                         -- remote id of a replay batch that replaced this one
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX batches_state ON batches (state);

-- Append-only history of files and batches (`batchdrop status FILE|BATCH` shows it).
CREATE TABLE events (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    file_id   INTEGER,
    batch_id  INTEGER,
    kind      TEXT NOT NULL,
    detail    TEXT
);
CREATE INDEX events_file ON events (file_id);
CREATE INDEX events_batch ON events (batch_id);
