-- Where the archiver wrote a finished file's receipt (`revert` rewrites it, `retry` removes
-- it). It used to be read back out of the text of the file's `finalized` event, which is
-- history for people, not an interface. Files finished before this column existed get it from
-- that text once, here.
ALTER TABLE files ADD COLUMN receipt_path TEXT;
UPDATE files SET receipt_path = (
    SELECT substr(e.detail, instr(e.detail, '; receipt ') + length('; receipt '))
    FROM events e
    WHERE e.file_id = files.id AND e.kind = 'finalized' AND instr(e.detail, '; receipt ') > 0
    ORDER BY e.id DESC LIMIT 1
) WHERE finalized = 1;
