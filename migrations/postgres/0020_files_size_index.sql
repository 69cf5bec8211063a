-- As migrations/0020_files_size_index.sql.
CREATE INDEX files_size ON files (dataset, size, state);
