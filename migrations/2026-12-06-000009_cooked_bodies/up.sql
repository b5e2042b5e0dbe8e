-- What people wrote, as the sanitized HTML pages show (Markdown parsed, then cleaned): made once
-- when the text is written, not on every page that renders it. NULL (rows written before this, or
-- cleared after the sanitizer's rules change) is made again from `body` when shown.
ALTER TABLE comments ADD COLUMN body_html TEXT;
ALTER TABLE posts ADD COLUMN body_html TEXT;
