-- Files whose records passed the local check against the dataset's schema before upload
-- (issue #20): a failed batch's outcome can exempt them, since the platform's refusal cannot
-- be about their rows. 0: not checked (or checked with problems).
ALTER TABLE files ADD COLUMN validated INTEGER NOT NULL DEFAULT 0;
