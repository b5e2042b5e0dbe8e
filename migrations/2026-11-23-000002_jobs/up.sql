-- The durable job queue, claimed with FOR UPDATE SKIP LOCKED (the River / Oban / GoodJob design).
CREATE TABLE jobs (
    id           BIGSERIAL PRIMARY KEY,
    queue        TEXT NOT NULL DEFAULT 'default',
    kind         TEXT NOT NULL,
    args         JSONB NOT NULL DEFAULT '{}',
    state        TEXT NOT NULL DEFAULT 'available'
                 CHECK (state IN ('available', 'running', 'completed', 'dead')),
    priority     SMALLINT NOT NULL DEFAULT 0,
    attempt      INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts INTEGER NOT NULL DEFAULT 4 CHECK (max_attempts > 0),
    run_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    locked_by    TEXT,
    locked_until TIMESTAMPTZ,
    -- Deduplicates work that is still to be done; finished jobs no longer hold their key.
    unique_key   TEXT,
    errors       JSONB NOT NULL DEFAULT '[]',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    CHECK (state <> 'running' OR (locked_by IS NOT NULL AND locked_until IS NOT NULL))
);
CREATE INDEX jobs_ready_idx ON jobs (queue, priority DESC, run_at, id) WHERE state = 'available';
CREATE INDEX jobs_lease_idx ON jobs (locked_until) WHERE state = 'running';
CREATE INDEX jobs_finished_idx ON jobs (state, finished_at) WHERE state IN ('completed', 'dead');
CREATE UNIQUE INDEX jobs_unique_key_active ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'running');

-- One row per periodic job and time bucket: however many schedulers run, each bucket enqueues once.
CREATE TABLE periodic_runs (
    name       TEXT NOT NULL,
    bucket     TIMESTAMPTZ NOT NULL,
    job_id     BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (name, bucket)
);

-- Circuit breakers, shared by every worker process.
CREATE TABLE circuit_breakers (
    name                 TEXT PRIMARY KEY,
    state                TEXT NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    opened_at            TIMESTAMPTZ,
    probe_until          TIMESTAMPTZ,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Stock is reserved when an order is placed and given back once if it fails or expires.
ALTER TABLE orders ADD COLUMN stock_reserved BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('pending', 'paid', 'failed', 'cancelled', 'expired'));
CREATE INDEX orders_pending_created_at_idx ON orders (created_at) WHERE status = 'pending';
CREATE INDEX payments_processing_started_idx ON payments (processing_started_at) WHERE status = 'processing';
CREATE INDEX payments_user_created_idx ON payments (user_id, created_at);
