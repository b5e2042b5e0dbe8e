-- Who made a chat application: the signed-in user or API bearer token's user that created it.
-- NULL for one made anonymously (the challenge's clients), whose token is then its only key.
-- The list of applications shows a caller only their own, newest first by id.
ALTER TABLE chat_applications ADD COLUMN owner_id BIGINT REFERENCES users (id);
CREATE INDEX chat_applications_by_owner ON chat_applications (owner_id, id) WHERE owner_id IS NOT NULL;
