ALTER TABLE posts DROP COLUMN deleted_at;
