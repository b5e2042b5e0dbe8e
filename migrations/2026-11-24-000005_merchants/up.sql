-- Issue 9: merchants' staff, balances with a ledger, refunds through the gateway, and the JSON
-- API's tokens and idempotency keys.

-- Every permission is a link: a user sees the payments, balances and ledger of the customers
-- (merchants) they are linked to, and nothing else.
CREATE TABLE user_customers (
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    customer_id BIGINT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, customer_id)
);
CREATE INDEX user_customers_customer_id_idx ON user_customers (customer_id, user_id);

-- Merchants may share a name (Stripe's customers do); a country is optional.
ALTER TABLE customers DROP CONSTRAINT customers_name_key;
ALTER TABLE customers ADD CONSTRAINT customers_name_length CHECK (length(name) BETWEEN 1 AND 200);
ALTER TABLE customers ADD COLUMN country TEXT CHECK (country ~ '^[A-Z]{2}$');
CREATE INDEX customers_name_idx ON customers (name);

-- A payment made through the API pays for an order of its own ('api'): the order pipeline
-- (claim, charge, settle, reconcile) then serves both without a second copy.
ALTER TABLE orders ADD COLUMN source TEXT NOT NULL DEFAULT 'shop' CHECK (source IN ('shop', 'api'));

ALTER TABLE payments ADD COLUMN description TEXT CHECK (length(description) <= 500);
ALTER TABLE payments ADD COLUMN payment_method TEXT CHECK (length(payment_method) <= 100);
-- The sum of the payment's refunds that have not failed; kept in the transaction that creates or
-- fails a refund, under the payment's row lock.
ALTER TABLE payments ADD COLUMN amount_refunded NUMERIC(10, 2) NOT NULL DEFAULT 0;
ALTER TABLE payments ADD CONSTRAINT payments_refunds_within_amount CHECK (amount_refunded >= 0 AND amount_refunded <= amount);
ALTER TABLE payments ADD CONSTRAINT payments_refunds_only_when_completed CHECK (amount_refunded = 0 OR status = 'completed');

-- The dashboard's query shapes: every list is one customer's payments, newest first, optionally
-- narrowed by status or by user (the customer index exists since migration 1). Reference lookups
-- use the unique index on reference.
CREATE INDEX payments_customer_status_created_idx ON payments (customer_id, status, created_at DESC, id DESC);
CREATE INDEX payments_customer_user_created_idx ON payments (customer_id, user_id, created_at DESC, id DESC);

-- Each customer's balance per currency. Changed only together with a ledger entry, in the same
-- transaction and under this row's lock, so it always equals the sum of its entries.
CREATE TABLE customer_balances (
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    currency    TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    available   NUMERIC(14, 2) NOT NULL DEFAULT 0 CHECK (available >= 0),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, currency)
);

CREATE TABLE balance_transactions (
    id          BIGSERIAL PRIMARY KEY,
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    type        TEXT NOT NULL CHECK (type IN ('payment', 'refund', 'refund_failure', 'adjustment')),
    amount      NUMERIC(14, 2) NOT NULL CHECK (amount <> 0),
    currency    TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- The payment's or refund's reference.
    source      UUID NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((type IN ('payment', 'refund_failure') AND amount > 0) OR (type = 'refund' AND amount < 0) OR type = 'adjustment')
);
CREATE INDEX balance_transactions_customer_idx ON balance_transactions (customer_id, id DESC);
-- A payment is credited once, and a refund debited once and given back at most once.
CREATE UNIQUE INDEX balance_transactions_once ON balance_transactions (type, source) WHERE type <> 'adjustment';

CREATE FUNCTION balance_transactions_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'balance_transactions is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER balance_transactions_append_only BEFORE UPDATE OR DELETE ON balance_transactions
    FOR EACH ROW EXECUTE FUNCTION balance_transactions_append_only();

-- Completed payments made before the ledger existed are credited now, so balance = Σ entries.
INSERT INTO balance_transactions (customer_id, type, amount, currency, source, created_at)
    SELECT customer_id, 'payment', amount, currency, reference, updated_at FROM payments WHERE status = 'completed';
INSERT INTO customer_balances (customer_id, currency, available)
    SELECT customer_id, currency, sum(amount) FROM balance_transactions GROUP BY customer_id, currency;

CREATE TABLE refunds (
    id                BIGSERIAL PRIMARY KEY,
    reference         UUID NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    payment_id        BIGINT NOT NULL REFERENCES payments (id),
    customer_id       BIGINT NOT NULL REFERENCES customers (id),
    -- Who asked for it.
    user_id           BIGINT NOT NULL REFERENCES users (id),
    amount            NUMERIC(10, 2) NOT NULL CHECK (amount > 0),
    currency          TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- pending: not yet settled with the gateway, including "asked, and no answer yet".
    status            TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    reason            TEXT CHECK (reason IN ('duplicate', 'fraudulent', 'requested_by_customer')),
    -- The requester's key, scoped to them: the same key never makes a second refund.
    idempotency_key   TEXT NOT NULL UNIQUE,
    -- The key the gateway knows this refund by.
    gateway_key       TEXT NOT NULL UNIQUE,
    gateway_refund_id TEXT,
    failure_code      TEXT,
    failure_message   TEXT,
    -- Bumped by every attempt: an attempt may only settle the refund it claimed (a fencing token).
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (status <> 'succeeded' OR gateway_refund_id IS NOT NULL)
);
CREATE INDEX refunds_payment_id_idx ON refunds (payment_id, id);
CREATE INDEX refunds_pending_idx ON refunds (updated_at) WHERE status = 'pending';

-- Stripe-style Idempotency-Key records for the JSON API, scoped per user. A row whose response is
-- still NULL is a request in flight; it may be taken over once `locked_until` has passed.
CREATE TABLE api_idempotency_keys (
    user_id       BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    status_code   INTEGER,
    response_body TEXT,
    locked_until  TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX api_idempotency_keys_created_idx ON api_idempotency_keys (created_at);

-- API tokens revoked before they expire (`DELETE /api/v1/auth/token`); a row can go once its
-- token has expired anyway.
CREATE TABLE api_revoked_tokens (
    jti        UUID PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What people did by hand to money: replays, manual settlements, link changes. Append-only.
CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT REFERENCES users (id),
    action     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    note       TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION payment_events_append_only();

-- The nightly (and on-demand) check of the money invariants; the dashboard shows the last one.
CREATE TABLE invariant_checks (
    id         BIGSERIAL PRIMARY KEY,
    ok         BOOLEAN NOT NULL,
    findings   JSONB NOT NULL DEFAULT '[]',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
