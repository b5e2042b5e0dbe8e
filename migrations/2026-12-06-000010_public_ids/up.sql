-- The ids the merchants' API and dashboard show (`cus_…`, `usr_…`, `txn_…`): random, so that an
-- id says nothing about how many customers, users or ledger entries exist, and cannot be guessed
-- from another. The sequential ids stay the keys that rows join on.
ALTER TABLE customers ADD COLUMN public_id UUID NOT NULL DEFAULT gen_random_uuid();
CREATE UNIQUE INDEX customers_public_id ON customers (public_id);
ALTER TABLE users ADD COLUMN public_id UUID NOT NULL DEFAULT gen_random_uuid();
CREATE UNIQUE INDEX users_public_id ON users (public_id);
ALTER TABLE balance_transactions ADD COLUMN public_id UUID NOT NULL DEFAULT gen_random_uuid();
CREATE UNIQUE INDEX balance_transactions_public_id ON balance_transactions (public_id);
