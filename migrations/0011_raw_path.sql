-- The exact bytes of a file's path when its name is not valid UTF-8 (rel_path then holds a
-- lossy rendering for humans). Such files are refused, but must still be moved with a receipt.
ALTER TABLE files ADD COLUMN raw_path BLOB;
