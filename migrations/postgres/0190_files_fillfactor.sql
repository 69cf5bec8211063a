-- Room on each page of `files` for the new versions of its rows (issue #23, fleet mode). A
-- file's row is updated about seven times on its way (hash, batch, sent, uploaded, records,
-- destination, finished); an update that changes no indexed column can stay on its page
-- (a HOT update: no new entry in any of the table's twelve indexes, and the old version is
-- pruned with the page) only when the page has room for the new version. With the default
-- fillfactor (100) new rows fill every page, and almost every update went to another page
-- with new entries in every index. PostgreSQL only: SQLite rewrites a row in place.
ALTER TABLE files SET (fillfactor = 70);
