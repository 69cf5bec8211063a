-- As migrations/0011_raw_path.sql (SQLite's BLOB is BYTEA here).
ALTER TABLE files ADD COLUMN raw_path BYTEA;
