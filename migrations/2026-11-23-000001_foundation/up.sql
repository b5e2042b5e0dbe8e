-- Accounts. Emails are unique whatever their case.
CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    email         TEXT NOT NULL CHECK (email <> ''),
    name          TEXT NOT NULL CHECK (name <> ''),
    password_hash TEXT NOT NULL,
    is_admin      BOOLEAN NOT NULL DEFAULT false,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

-- The merchants that products, orders and payments belong to.
CREATE TABLE customers (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE CHECK (name <> ''),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id          BIGSERIAL PRIMARY KEY,
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    name        TEXT NOT NULL CHECK (name <> ''),
    price       NUMERIC(10, 2) NOT NULL CHECK (price > 0),
    currency    TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    stock       INTEGER NOT NULL CHECK (stock >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (customer_id, name)
);

CREATE TABLE orders (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id),
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'paid', 'failed', 'cancelled')),
    -- Fixed when the order is placed: what the customer agreed to pay, whatever prices do later.
    total       NUMERIC(10, 2) NOT NULL CHECK (total > 0),
    currency    TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_user_id_created_at_idx ON orders (user_id, created_at DESC, id DESC);

CREATE TABLE order_items (
    id         BIGSERIAL PRIMARY KEY,
    order_id   BIGINT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id BIGINT NOT NULL REFERENCES products (id),
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    unit_price NUMERIC(10, 2) NOT NULL CHECK (unit_price > 0)
);
CREATE INDEX order_items_order_id_idx ON order_items (order_id);

CREATE TABLE payments (
    id                      BIGSERIAL PRIMARY KEY,
    -- The id shown to people and other systems; the primary key stays an internal detail.
    reference               UUID NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    user_id                 BIGINT NOT NULL REFERENCES users (id),
    order_id                BIGINT NOT NULL REFERENCES orders (id),
    customer_id             BIGINT NOT NULL REFERENCES customers (id),
    amount                  NUMERIC(10, 2) NOT NULL CHECK (amount > 0),
    currency                TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status                  TEXT NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    idempotency_key         TEXT NOT NULL UNIQUE,
    external_transaction_id TEXT,
    error_code              TEXT,
    error_message           TEXT,
    -- Meaningful while failed: whether another attempt may be made.
    retryable               BOOLEAN NOT NULL DEFAULT true,
    retry_count             INTEGER NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    -- Bumped by every claim; a worker may only finish the attempt it claimed (a fencing token).
    attempts                INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    processing_started_at   TIMESTAMPTZ,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (status <> 'completed' OR external_transaction_id IS NOT NULL),
    CHECK (status <> 'processing' OR processing_started_at IS NOT NULL)
);
CREATE UNIQUE INDEX payments_order_id_key ON payments (order_id);
CREATE INDEX payments_status_created_at_idx ON payments (status, created_at);
CREATE INDEX payments_customer_id_created_at_idx ON payments (customer_id, created_at DESC, id DESC);

-- Money that was taken is never un-taken by an UPDATE: a completed payment is frozen.
CREATE FUNCTION payments_freeze_completed() RETURNS trigger AS $$
BEGIN
    IF OLD.status = 'completed' AND (
        NEW.status <> 'completed'
        OR NEW.amount <> OLD.amount
        OR NEW.external_transaction_id IS DISTINCT FROM OLD.external_transaction_id
    ) THEN
        RAISE EXCEPTION 'payment % is completed and cannot change', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER payments_freeze_completed BEFORE UPDATE ON payments
    FOR EACH ROW EXECUTE FUNCTION payments_freeze_completed();

-- Payments are records of money: they are never deleted.
CREATE FUNCTION payments_never_deleted() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'payments are never deleted' USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER payments_never_deleted BEFORE DELETE ON payments
    FOR EACH ROW EXECUTE FUNCTION payments_never_deleted();

-- The audit trail of every status change; rows are only ever added. payment_id has no foreign
-- key on purpose: every event is written in the statement or transaction that changes its
-- (locked) payment, and payments are never deleted, so the key could not fail — while its check
-- (a KEY SHARE lock on the payment per event) was the largest single cost of a charge job in
-- `make bench`.
CREATE TABLE payment_events (
    id          BIGSERIAL PRIMARY KEY,
    payment_id  BIGINT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX payment_events_payment_id_idx ON payment_events (payment_id, id);

CREATE FUNCTION payment_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'payment_events is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER payment_events_append_only BEFORE UPDATE OR DELETE ON payment_events
    FOR EACH ROW EXECUTE FUNCTION payment_events_append_only();
