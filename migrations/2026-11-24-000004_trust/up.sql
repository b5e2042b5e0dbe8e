-- Issue 7: outcomes that are unknown stay unknown, gateway keys that are unique everywhere, and
-- server-side sessions that can be revoked.

-- The key the gateway sees. It was `payment_{user}_{order}`, which repeats across databases
-- (a reset, staging beside production) and so could pick up another installation's charge; new
-- payments use their own random reference. Existing payments keep the key they were charged with.
ALTER TABLE payments ADD COLUMN gateway_key TEXT;
UPDATE payments SET gateway_key = idempotency_key;
ALTER TABLE payments ALTER COLUMN gateway_key SET NOT NULL;
CREATE UNIQUE INDEX payments_gateway_key_key ON payments (gateway_key);

-- requires_confirmation: the last attempt may have reached the gateway and nobody could tell us
-- whether it did. Not final: a reconciliation job asks the gateway again at `next_check_at`.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'requires_confirmation'));
ALTER TABLE payments ADD COLUMN next_check_at TIMESTAMPTZ;
ALTER TABLE payments ADD COLUMN confirmation_checks INTEGER NOT NULL DEFAULT 0 CHECK (confirmation_checks >= 0);
ALTER TABLE payments ADD CONSTRAINT payments_unknown_is_rechecked
    CHECK (status <> 'requires_confirmation' OR next_check_at IS NOT NULL);
CREATE INDEX payments_next_check_idx ON payments (next_check_at) WHERE status = 'requires_confirmation';

-- Signed-in sessions. The cookie carries a random token; only its hash is stored, so a copy of
-- this table signs nobody in. Revoking a row ends the session wherever the cookie was copied.
CREATE TABLE user_sessions (
    id           BIGSERIAL PRIMARY KEY,
    token_hash   BYTEA NOT NULL UNIQUE,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_agent   TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX user_sessions_user_id_idx ON user_sessions (user_id) WHERE revoked_at IS NULL;
