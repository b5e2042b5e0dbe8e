ALTER TABLE balance_transactions DROP COLUMN public_id;
ALTER TABLE users DROP COLUMN public_id;
ALTER TABLE customers DROP COLUMN public_id;
