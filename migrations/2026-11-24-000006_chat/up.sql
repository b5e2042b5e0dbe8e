-- Issue 10, first part: chat applications. Each is known by a random token, which is also its
-- credential; its chats and messages (numbered per parent) come with the numbering design.
CREATE TABLE chat_applications (
    id          BIGSERIAL PRIMARY KEY,
    token       TEXT NOT NULL UNIQUE CHECK (token ~ '^[0-9a-f]{32}$'),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    chats_count INTEGER NOT NULL DEFAULT 0 CHECK (chats_count >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
