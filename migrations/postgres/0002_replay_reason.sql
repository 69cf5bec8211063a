-- As migrations/0002_replay_reason.sql.
ALTER TABLE files ADD COLUMN replay_reason TEXT;
