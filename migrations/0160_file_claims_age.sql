-- Fleet mode (issue #22): claims of files long finished are deleted by a periodic, bounded
-- sweep (src/store/fleet.rs, `Member::forget_finished_claims`), oldest first; this index
-- finds them without reading the whole table. Unused on SQLite, here so that both backends
-- describe one schema.
CREATE INDEX file_claims_age ON file_claims (claimed_at);
