-- Fleet mode (issue #22): a file becomes ready only by the scanner of its watch. A scanner
-- checks its scan lease, then records what it found; paused in between (SIGSTOP, a stall) past
-- its lease, it could record a file its successor recorded too, and two ready records of one
-- version would both be uploaded. An instance's insert of a ready file now fails (BD002)
-- unless the instance holds the watch's scan lease at that moment, and the check locks the
-- lease's row until the recording commits: a takeover waits for a recording in progress, and
-- a recording after a takeover is refused. Sessions that are no instance (tests, tools) pass,
-- as with the batch lease guard (0090). PostgreSQL only: a single daemon on SQLite scans
-- under its state-dir lock.
CREATE FUNCTION batchdrop_scan_guard() RETURNS trigger AS $$
DECLARE
    me TEXT := current_setting('batchdrop.instance', true);
    held INT;
BEGIN
    IF me IS NULL OR me = '' THEN
        RETURN NEW;
    END IF;
    SELECT 1 INTO held FROM scan_leases
     WHERE watch = NEW.watch AND owner = me
       AND expires_at > (extract(epoch from clock_timestamp()) * 1000)::bigint
     FOR SHARE;
    IF held IS NULL THEN
        RAISE EXCEPTION 'instance % is not the scanner of watch % (its scan lease passed on or expired), so it does not record %',
            me, NEW.watch, NEW.rel_path
            USING ERRCODE = 'BD002';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER files_scan_guard BEFORE INSERT ON files
    FOR EACH ROW WHEN (NEW.state = 'ready') EXECUTE FUNCTION batchdrop_scan_guard();
