CREATE TABLE posts (
    id             BIGSERIAL PRIMARY KEY,
    user_id        BIGINT NOT NULL REFERENCES users (id),
    title          TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 300),
    body           TEXT NOT NULL,
    comments_count INTEGER NOT NULL DEFAULT 0 CHECK (comments_count >= 0),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX posts_created_at_idx ON posts (created_at DESC, id DESC);

CREATE TABLE comments (
    id                BIGSERIAL PRIMARY KEY,
    post_id           BIGINT NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    parent_comment_id BIGINT REFERENCES comments (id),
    user_id           BIGINT NOT NULL REFERENCES users (id),
    body              TEXT NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    -- 0 for a reply to the post itself.
    depth             INTEGER NOT NULL CHECK (depth >= 0),
    -- The ids from the root down, zero-padded and dot-separated: sorting by it lists the tree
    -- depth-first, and a subtree is a prefix range.
    path              TEXT COLLATE "C" NOT NULL,
    upvotes           INTEGER NOT NULL DEFAULT 0 CHECK (upvotes >= 0),
    children_count    INTEGER NOT NULL DEFAULT 0 CHECK (children_count >= 0),
    -- Bumped by every change to what the comment shows: part of its cache key.
    version           INTEGER NOT NULL DEFAULT 1,
    edited_at         TIMESTAMPTZ,
    deleted_at        TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((parent_comment_id IS NULL) = (depth = 0))
);
CREATE INDEX comments_post_id_idx ON comments (post_id);
CREATE INDEX comments_parent_comment_id_idx ON comments (parent_comment_id);
CREATE INDEX comments_post_id_parent_comment_id_idx ON comments (post_id, parent_comment_id);
CREATE UNIQUE INDEX comments_post_id_path_idx ON comments (post_id, path);

CREATE TABLE comment_votes (
    comment_id BIGINT NOT NULL REFERENCES comments (id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (comment_id, user_id)
);
CREATE INDEX comment_votes_user_id_idx ON comment_votes (user_id, comment_id);
