-- API bearer tokens issued before this instant are void: a password change or "sign out
-- everywhere" sets it, in the transaction that ends the sessions, so the tokens end with them.
-- NULL: no cut-off. Checked in the one query that reads a token's user on every API request.
ALTER TABLE users ADD COLUMN tokens_valid_after TIMESTAMPTZ;
