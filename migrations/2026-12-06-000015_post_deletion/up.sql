-- A discussion its author deleted: its title and text are no longer shown, its replies stay (as
-- with a deleted comment). The list shows it only while it has replies.
ALTER TABLE posts ADD COLUMN deleted_at TIMESTAMPTZ;
