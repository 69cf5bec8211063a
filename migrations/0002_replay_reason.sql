-- The reason a .replay sidecar gives for its replay (sent as `replay.reason`; "replace" when
-- the sidecar names none). Kept per file, like `replay_json`: a replay file travels alone, so
-- its batch's reason is its own.
ALTER TABLE files ADD COLUMN replay_reason TEXT;
