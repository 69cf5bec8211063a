-- A batch never holds content that is already in its dataset or on its way there (unless the
-- watch allows duplicates). The rule is kept here, in the store, not in a stage's memory, so
-- that it holds for every writer of this database (and carries over to a shared one):
--
-- * `content_claims`: one row per (dataset, content). It names the file whose batch carries
--   that content. It is taken (or taken over) in the transaction that seals the file's batch;
--   the primary key makes a second holder impossible. A claim whose holder failed, changed, or
--   whose batch failed, was reverted or replaced is dead, and the next file of that content
--   takes it over (see `Store::seal_batch`).
-- * `files.waits_for`: a ready file whose content is claimed by a file still in flight (or one
--   whose size matches a file in flight whose content is not known yet) waits for that file's
--   outcome, out of the batcher's way, until `Store::release_waiting` lets it go again.
-- * `files.records`: the file's own record count, as the platform's Data Access listing gives
--   it once its batch succeeded (receipts: `file_records`); NULL when the platform did not say.
CREATE TABLE content_claims (
    dataset  TEXT    NOT NULL,
    sha256   TEXT    NOT NULL,
    file_id  INTEGER NOT NULL REFERENCES files(id),
    PRIMARY KEY (dataset, sha256)
);
ALTER TABLE files ADD COLUMN waits_for INTEGER REFERENCES files(id);
ALTER TABLE files ADD COLUMN records INTEGER;
-- Partial: only the few files waiting are in it, so releasing them costs nothing otherwise.
CREATE INDEX files_waiting ON files (waits_for) WHERE waits_for IS NOT NULL;
