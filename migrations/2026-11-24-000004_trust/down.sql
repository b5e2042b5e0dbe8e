DROP TABLE user_sessions;
DROP INDEX payments_next_check_idx;
ALTER TABLE payments DROP CONSTRAINT payments_unknown_is_rechecked;
ALTER TABLE payments DROP COLUMN confirmation_checks;
ALTER TABLE payments DROP COLUMN next_check_at;
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('pending', 'processing', 'completed', 'failed'));
DROP INDEX payments_gateway_key_key;
ALTER TABLE payments DROP COLUMN gateway_key;
