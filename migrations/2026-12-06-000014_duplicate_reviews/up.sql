-- Suspected double charges that a merchant's staff looked at and called "not a duplicate": a group
-- (same payer, merchant, amount and currency, each payment within a short window of the one
-- before) is known by its first payment, and stays dismissed while it holds no more payments than
-- were seen; one more payment joining it brings it back. Who decided is also in the audit log.
CREATE TABLE duplicate_reviews (
    first_payment_id BIGINT PRIMARY KEY REFERENCES payments (id),
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    payments_seen INTEGER NOT NULL CHECK (payments_seen >= 2),
    decided_by BIGINT NOT NULL REFERENCES users (id),
    decided_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
