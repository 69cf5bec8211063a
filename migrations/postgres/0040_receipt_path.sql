-- As migrations/0040_receipt_path.sql. Its back-fill of older rows is not needed here: no
-- PostgreSQL store predates the column.
ALTER TABLE files ADD COLUMN receipt_path TEXT;
