-- Files a watch maps before upload (issue #24): the staged file written under the state dir
-- is what gets uploaded, and this row is its record. Written once, when the staged file is
-- complete (fsynced and renamed) and before the file can be batched, so a staged file that
-- may have been sent is never mapped again: a restart uploads these same bytes, whatever the
-- mapping set says by then.
CREATE TABLE staged_files (
    file_id          INTEGER PRIMARY KEY,          -- files.id
    path             TEXT    NOT NULL,             -- the staged file (absolute)
    name             TEXT    NOT NULL,             -- the name it is uploaded under
    format           TEXT    NOT NULL,             -- 'parquet' or 'json'
    dev              INTEGER NOT NULL,             -- the staged file's identity, as written
    ino              INTEGER NOT NULL,
    size             INTEGER NOT NULL,
    mtime_ns         INTEGER NOT NULL,
    sha256           TEXT    NOT NULL,             -- of the staged file
    original_sha256  TEXT    NOT NULL,             -- of the dropped file, as it was mapped
    original_format  TEXT    NOT NULL,             -- what the dropped file was read as
    mapping_path     TEXT    NOT NULL,
    mapping_sha256   TEXT    NOT NULL,             -- of the mapping set's bytes
    records_in       INTEGER NOT NULL,
    records_out      INTEGER NOT NULL,
    rejected         INTEGER NOT NULL,             -- rows the mapping or the schema rejected
    rejected_json    TEXT    NOT NULL,             -- the first of them: [{row, line, reasons}]
    staged_at        INTEGER NOT NULL              -- unix ms
);
