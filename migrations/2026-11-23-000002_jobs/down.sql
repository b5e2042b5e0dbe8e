DROP INDEX payments_user_created_idx;
DROP INDEX payments_processing_started_idx;
DROP INDEX orders_pending_created_at_idx;
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN ('pending', 'paid', 'failed', 'cancelled'));
ALTER TABLE orders DROP COLUMN stock_reserved;
DROP TABLE circuit_breakers;
DROP TABLE periodic_runs;
DROP TABLE jobs;
