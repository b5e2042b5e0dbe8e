ALTER TABLE chat_applications DROP COLUMN owner_id;
