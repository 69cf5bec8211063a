-- Fleet mode: a change to a leased batch by an instance that no longer holds its lease fails
-- (issue #22). Each instance's connections carry its id (`batchdrop.instance`, set at
-- connect); the queue's own statements then need no lease clause of their own, and a
-- transaction that ends a batch rolls back whole (the batch and its files) when the lease was
-- lost. Lease operations themselves (acquire, renew, release: they change the owner, the epoch
-- or the expiry) and sessions that are no instance (an operator's `abort`) pass.
CREATE FUNCTION batchdrop_lease_guard() RETURNS trigger AS $$
DECLARE
    me TEXT := current_setting('batchdrop.instance', true);
BEGIN
    IF me IS NULL OR me = '' OR OLD.lease_owner IS NULL THEN
        RETURN NEW;
    END IF;
    IF NEW.lease_owner IS DISTINCT FROM OLD.lease_owner
       OR NEW.lease_epoch IS DISTINCT FROM OLD.lease_epoch
       OR NEW.lease_expires_at IS DISTINCT FROM OLD.lease_expires_at THEN
        RETURN NEW;
    END IF;
    IF OLD.lease_owner <> me
       OR OLD.lease_expires_at <= (extract(epoch from clock_timestamp()) * 1000)::bigint THEN
        RAISE EXCEPTION 'batch #% is leased to instance % (epoch %), not to %',
            OLD.id, OLD.lease_owner, OLD.lease_epoch, me
            USING ERRCODE = 'BD001';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER batches_lease_guard BEFORE UPDATE ON batches
    FOR EACH ROW EXECUTE FUNCTION batchdrop_lease_guard();
