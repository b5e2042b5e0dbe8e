//! Demo data that only the pipeline's areas may write: a month of settled payments for `make run`
//! (`seed.rs` asks for it).

use diesel::prelude::*;

use crate::schema::orders;

/// A month of history for the dashboard: payments from the demo shoppers to both merchants, most
/// completed (credited to the balances through the ledger, as the pipeline does), some declined.
/// Only when the merchants have no such history yet.
pub fn payment_history(conn: &mut PgConnection, merchants: &[i64]) -> QueryResult<usize> {
    use diesel::sql_types::{Array, BigInt};
    let has_history: bool = diesel::select(diesel::dsl::exists(
        orders::table.filter(orders::source.eq("api").and(orders::customer_id.eq_any(merchants))),
    ))
    .get_result(conn)?;
    if has_history {
        return Ok(0);
    }
    let payers: Vec<i64> = crate::schema::users::table
        .filter(crate::schema::users::email.eq_any(["alice@example.com", "bob@example.com"]))
        .select(crate::schema::users::id)
        .load(conn)?;
    // Deterministic variety: amounts from 5.00 to 204.99, spread over the last 30 days, one in
    // nine declined; one pair charged twice a minute apart, for the double-charge detector.
    conn.transaction(|conn| {
        let created = diesel::sql_query(
            "WITH made AS ( \
                 SELECT g, $1::bigint[] AS m, $2::bigint[] AS u FROM generate_series(1, 360) g), \
             rows AS ( \
                 SELECT g, m[1 + g % array_length(m, 1)] AS customer_id, u[1 + (g / 3) % array_length(u, 1)] AS user_id, \
                     ((500 + (g * 7919) % 20000)::numeric / 100)::numeric(10, 2) AS amount, \
                     now() - make_interval(mins => (g * 131) % (30 * 24 * 60)) AS at, \
                     CASE WHEN g % 9 = 0 THEN 'failed' ELSE 'completed' END AS status FROM made \
                 UNION ALL \
                 SELECT 1000 + k, m[1], u[1], 42.00, now() - make_interval(mins => 90 - k), 'completed' \
                 FROM made, generate_series(0, 1) k WHERE g = 1), \
             orders_made AS ( \
                 INSERT INTO orders (user_id, customer_id, status, total, currency, source, created_at, updated_at) \
                 SELECT user_id, customer_id, CASE status WHEN 'completed' THEN 'paid' ELSE 'failed' END, amount, 'USD', 'api', at, at \
                 FROM rows ORDER BY g RETURNING id, user_id, customer_id, total, created_at, status) \
             INSERT INTO payments (user_id, order_id, customer_id, amount, currency, status, idempotency_key, gateway_key, \
                 external_transaction_id, error_code, error_message, retryable, attempts, created_at, updated_at, description) \
             SELECT user_id, id, customer_id, total, 'USD', CASE status WHEN 'paid' THEN 'completed' ELSE 'failed' END, \
                 'demo_' || id, 'demo_' || id, CASE status WHEN 'paid' THEN 'ch_demo_' || id END, \
                 CASE status WHEN 'failed' THEN 'card_declined' END, CASE status WHEN 'failed' THEN 'The card was declined' END, \
                 false, 1, created_at, created_at, 'Demo order #' || id FROM orders_made",
        )
        .bind::<Array<BigInt>, _>(merchants)
        .bind::<Array<BigInt>, _>(&payers)
        .execute(conn)?;
        diesel::sql_query(
            "INSERT INTO balance_transactions (customer_id, type, amount, currency, source, created_at) \
              SELECT customer_id, 'payment', amount, currency, reference, created_at FROM payments \
              WHERE status = 'completed' AND idempotency_key LIKE 'demo\\_%' ORDER BY created_at",
        )
        .execute(conn)?;
        diesel::sql_query(
            "INSERT INTO customer_balances AS b (customer_id, currency, available) \
              SELECT customer_id, currency, sum(amount) FROM payments WHERE status = 'completed' AND idempotency_key LIKE 'demo\\_%' \
              GROUP BY 1, 2 ORDER BY 1, 2 \
              ON CONFLICT (customer_id, currency) DO UPDATE SET available = b.available + EXCLUDED.available",
        )
        .execute(conn)?;
        Ok(created)
    })
}
