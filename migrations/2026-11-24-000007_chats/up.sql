-- Issue 10: chats numbered per application, messages numbered per chat. The unique indexes on
-- (parent, number) are the last line of defence of the numbering: nothing is ever numbered twice.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE chats (
    id             BIGSERIAL PRIMARY KEY,
    application_id BIGINT NOT NULL REFERENCES chat_applications (id) ON DELETE CASCADE,
    number         INTEGER NOT NULL CHECK (number > 0),
    messages_count INTEGER NOT NULL DEFAULT 0 CHECK (messages_count >= 0),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (application_id, number)
);

CREATE TABLE chat_messages (
    id         BIGSERIAL PRIMARY KEY,
    chat_id    BIGINT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    number     INTEGER NOT NULL CHECK (number > 0),
    body       TEXT NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (chat_id, number)
);
-- Substring search in any case and any script: trigrams, with ILIKE rechecking every candidate.
CREATE INDEX chat_messages_body_trgm_idx ON chat_messages USING gin (body gin_trgm_ops);
