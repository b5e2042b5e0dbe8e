-- Issue 10: chats and messages accepted through Redis. An *epoch* is a stretch of time in which
-- Redis's counters and stream are trusted; any loss of Redis (down, flushed, restarted empty)
-- ends it, and a new one starts only once every live server has written what it accepted to
-- PostgreSQL (so PostgreSQL's highest numbers are complete when the new counters start from them).
CREATE TABLE chat_epochs (
    id         BIGSERIAL PRIMARY KEY,
    value      TEXT NOT NULL UNIQUE,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at   TIMESTAMPTZ
);
CREATE UNIQUE INDEX chat_epochs_one_open ON chat_epochs ((true)) WHERE ended_at IS NULL;

-- The servers that accept chat writes: alive while their heartbeat is fresh.
CREATE TABLE chat_nodes (
    node          TEXT PRIMARY KEY,
    heartbeat_at  TIMESTAMPTZ NOT NULL,
    -- The ended epoch whose accepted items this server has written to PostgreSQL ('' for none).
    drained_epoch TEXT,
    -- Numbering in PostgreSQL right now, because Redis cannot be reached.
    synchronous   BOOLEAN NOT NULL DEFAULT false
);
