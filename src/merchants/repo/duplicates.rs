//! Suspected double charges: completed, unrefunded payments of the same payer to the same merchant
//! for the same amount, each within a short window of the one before, grouped into one suspect
//! (gaps and islands over a window function), minus the groups staff called "not a duplicate".

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Numeric, Text, Timestamptz};
use uuid::Uuid;

use crate::merchants::MerchantError;
use crate::payments::{Currency, Money};
use crate::schema::payments;

/// At most this long between one payment of a group and the next (a double click, a retried
/// form); two orders placed minutes apart are two purchases.
pub const DUPLICATE_WINDOW_SECS: i32 = 120;

#[derive(Debug, Clone, QueryableByName)]
pub struct DuplicateGroup {
    /// The first payment's reference: the group's name.
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub first: Uuid,
    /// Every payment of the group, oldest first (the first included).
    #[diesel(sql_type = Array<diesel::sql_types::Uuid>)]
    pub payments: Vec<Uuid>,
    #[diesel(sql_type = Numeric)]
    pub amount: BigDecimal,
    #[diesel(sql_type = Text)]
    pub currency: Currency,
    #[diesel(sql_type = BigInt)]
    pub span_seconds: i64,
    #[diesel(sql_type = Timestamptz)]
    pub first_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub customer_name: String,
    #[diesel(sql_type = Text)]
    pub payer: String,
}

impl DuplicateGroup {
    pub fn money(&self) -> Money {
        Money::stored(self.amount.clone(), self.currency)
    }
}

/// Unresolved groups of these customers whose first payment is at or after `since`, oldest first,
/// `limit` of them after the group `after` (its first payment's time and reference).
pub fn duplicate_groups(
    conn: &mut PgConnection,
    visible: &[i64],
    since: DateTime<Utc>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> QueryResult<Vec<DuplicateGroup>> {
    let (after_at, after_ref) = after.map_or((None, None), |(at, r)| (Some(at), Some(r)));
    diesel::sql_query(
        "WITH p AS ( \
             SELECT id, reference, customer_id, user_id, amount, currency, created_at, \
                 CASE WHEN created_at - lag(created_at) OVER w <= make_interval(secs => $2) THEN 0 ELSE 1 END AS starts \
             FROM payments WHERE customer_id = ANY($1) AND status = 'completed' AND amount_refunded = 0 AND created_at >= $3 \
             WINDOW w AS (PARTITION BY customer_id, user_id, amount, currency ORDER BY created_at, id)), \
         islands AS ( \
             SELECT *, sum(starts) OVER (PARTITION BY customer_id, user_id, amount, currency ORDER BY created_at, id) AS island FROM p), \
         groups AS ( \
             SELECT (array_agg(id ORDER BY created_at, id))[1] AS first_id, \
                 (array_agg(reference ORDER BY created_at, id))[1] AS first, \
                 array_agg(reference ORDER BY created_at, id) AS payments, \
                 customer_id, user_id, amount, currency, min(created_at) AS first_at, \
                 extract(epoch FROM max(created_at) - min(created_at))::bigint AS span_seconds, count(*)::int AS n \
             FROM islands GROUP BY customer_id, user_id, amount, currency, island HAVING count(*) > 1) \
         SELECT g.first, g.payments, g.amount, g.currency, g.span_seconds, g.first_at, c.name AS customer_name, u.email AS payer \
         FROM groups g JOIN customers c ON c.id = g.customer_id JOIN users u ON u.id = g.user_id \
         WHERE NOT EXISTS (SELECT 1 FROM duplicate_reviews r WHERE r.first_payment_id = g.first_id AND r.payments_seen >= g.n) \
           AND ($4::timestamptz IS NULL OR (g.first_at, g.first) > ($4, $5)) \
         ORDER BY g.first_at, g.first LIMIT $6",
    )
    .bind::<Array<BigInt>, _>(visible)
    .bind::<Integer, _>(DUPLICATE_WINDOW_SECS)
    .bind::<Timestamptz, _>(since)
    .bind::<diesel::sql_types::Nullable<Timestamptz>, _>(after_at)
    .bind::<diesel::sql_types::Nullable<diesel::sql_types::Uuid>, _>(after_ref)
    .bind::<BigInt, _>(limit)
    .load(conn)
}

/// Records that the group starting at this (visible) payment, holding `seen` payments, is not a
/// duplicate, with who said so in the audit log, in one transaction. `false`: already recorded
/// for at least as many payments.
pub fn dismiss_duplicate(conn: &mut PgConnection, visible: &[i64], first: Uuid, seen: i32, by: i64) -> Result<bool, MerchantError> {
    conn.transaction(|conn| {
        let (payment_id, customer_id): (i64, i64) = payments::table
            .filter(payments::reference.eq(first).and(payments::customer_id.eq_any(visible)))
            .select((payments::id, payments::customer_id))
            .first(conn)
            .optional()?
            .ok_or(MerchantError::NotFound("payment"))?;
        let recorded = diesel::sql_query(
            "INSERT INTO duplicate_reviews (first_payment_id, customer_id, payments_seen, decided_by) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (first_payment_id) DO UPDATE SET payments_seen = excluded.payments_seen, decided_by = excluded.decided_by, \
                 decided_at = now() \
             WHERE duplicate_reviews.payments_seen < excluded.payments_seen",
        )
        .bind::<BigInt, _>(payment_id)
        .bind::<BigInt, _>(customer_id)
        .bind::<Integer, _>(seen)
        .bind::<BigInt, _>(by)
        .execute(conn)?;
        if recorded > 0 {
            super::audit(conn, Some(by), "dismiss_duplicate", &format!("payment {first}"), &format!("{seen} payments are not a double charge"))?;
        }
        Ok(recorded > 0)
    })
}
