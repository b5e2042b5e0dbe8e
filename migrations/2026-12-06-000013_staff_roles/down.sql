ALTER TABLE user_customers DROP COLUMN role;
