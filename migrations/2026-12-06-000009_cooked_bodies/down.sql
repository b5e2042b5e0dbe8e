ALTER TABLE posts DROP COLUMN body_html;
ALTER TABLE comments DROP COLUMN body_html;
