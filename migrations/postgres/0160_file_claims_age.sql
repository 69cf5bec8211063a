-- As migrations/0160_file_claims_age.sql (the claim sweep's oldest-first index, #22).
CREATE INDEX file_claims_age ON file_claims (claimed_at);
