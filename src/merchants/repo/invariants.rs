//! The money invariants, as queries counting the rows that break them, and their last result.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::BigInt;

use crate::schema::invariant_checks;

#[derive(Debug, Clone, Queryable)]
pub struct InvariantCheck {
    pub ok: bool,
    pub findings: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

pub fn last_check(conn: &mut PgConnection) -> QueryResult<Option<InvariantCheck>> {
    invariant_checks::table
        .order(invariant_checks::id.desc())
        .select((invariant_checks::ok, invariant_checks::findings, invariant_checks::created_at))
        .first(conn)
        .optional()
}

pub fn record_check(conn: &mut PgConnection, findings: &[String]) -> QueryResult<()> {
    diesel::insert_into(invariant_checks::table)
        .values((invariant_checks::ok.eq(findings.is_empty()), invariant_checks::findings.eq(serde_json::json!(findings))))
        .execute(conn)
        .map(drop)
}

/// Each money invariant as a query counting the rows that break it.
pub const INVARIANTS: [(&str, &str); 5] = [
    (
        "every balance equals the sum of its ledger entries",
        "SELECT count(*) AS n FROM customer_balances b FULL JOIN \
             (SELECT customer_id, currency, sum(amount) AS total FROM balance_transactions GROUP BY 1, 2) l \
             USING (customer_id, currency) WHERE coalesce(b.available, 0) <> coalesce(l.total, 0)",
    ),
    (
        "no payment is refunded beyond what was captured",
        "SELECT count(*) AS n FROM payments p WHERE p.amount_refunded > p.amount OR p.amount_refunded <> \
             coalesce((SELECT sum(amount) FROM refunds r WHERE r.payment_id = p.id AND r.status <> 'failed'), 0)",
    ),
    (
        "at most one completed payment per order",
        "SELECT count(*) AS n FROM (SELECT order_id FROM payments WHERE status = 'completed' GROUP BY order_id HAVING count(*) > 1) d",
    ),
    (
        "every completed payment has a gateway transaction id",
        "SELECT count(*) AS n FROM payments WHERE status = 'completed' AND external_transaction_id IS NULL",
    ),
    (
        "every gateway charge belongs to one completed payment",
        "SELECT count(*) AS n FROM (SELECT external_transaction_id FROM payments WHERE external_transaction_id IS NOT NULL \
             GROUP BY 1 HAVING count(*) > 1 OR bool_and(status <> 'completed')) d",
    ),
];

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Runs every invariant; returns what is broken, in words.
pub fn check_invariants(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    let mut findings = Vec::new();
    for (rule, sql) in INVARIANTS {
        let broken = diesel::sql_query(sql).get_result::<Count>(conn)?.n;
        if broken > 0 {
            findings.push(format!("{rule}: {broken} rows break it"));
        }
    }
    Ok(findings)
}
