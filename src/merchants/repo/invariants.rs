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

/// A broken invariant at one merchant: the rule, the customer whose rows break it, how many.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    pub rule: String,
    pub customer_id: i64,
    pub rows: i64,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} rows break it", self.rule, self.rows)
    }
}

impl InvariantCheck {
    /// What the check found, by merchant. A check recorded before findings named their merchant
    /// reads as findings at no merchant (so only the platform-wide view shows them).
    pub fn findings(&self) -> Vec<Finding> {
        self.findings
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| match item.as_str() {
                        Some(words) => Finding { rule: words.to_string(), customer_id: 0, rows: 0 },
                        None => serde_json::from_value(item.clone()).unwrap_or(Finding { rule: item.to_string(), customer_id: 0, rows: 0 }),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub fn last_check(conn: &mut PgConnection) -> QueryResult<Option<InvariantCheck>> {
    invariant_checks::table
        .order(invariant_checks::id.desc())
        .select((invariant_checks::ok, invariant_checks::findings, invariant_checks::created_at))
        .first(conn)
        .optional()
}

pub fn record_check(conn: &mut PgConnection, findings: &[Finding]) -> QueryResult<()> {
    diesel::insert_into(invariant_checks::table)
        .values((invariant_checks::ok.eq(findings.is_empty()), invariant_checks::findings.eq(serde_json::json!(findings))))
        .execute(conn)
        .map(drop)
}

/// Each money invariant as a query counting, per merchant (customer), the rows that break it.
pub const INVARIANTS: [(&str, &str); 5] = [
    (
        "every balance equals the sum of its ledger entries",
        "SELECT customer_id, count(*) AS n FROM customer_balances b FULL JOIN \
             (SELECT customer_id, currency, sum(amount) AS total FROM balance_transactions GROUP BY 1, 2) l \
             USING (customer_id, currency) WHERE coalesce(b.available, 0) <> coalesce(l.total, 0) GROUP BY 1",
    ),
    (
        "no payment is refunded beyond what was captured",
        "SELECT p.customer_id, count(*) AS n FROM payments p WHERE p.amount_refunded > p.amount OR p.amount_refunded <> \
             coalesce((SELECT sum(amount) FROM refunds r WHERE r.payment_id = p.id AND r.status <> 'failed'), 0) GROUP BY 1",
    ),
    (
        "at most one completed payment per order",
        "SELECT customer_id, count(*) AS n FROM (SELECT order_id, min(customer_id) AS customer_id FROM payments \
             WHERE status = 'completed' GROUP BY order_id HAVING count(*) > 1) d GROUP BY 1",
    ),
    (
        "every completed payment has a gateway transaction id",
        "SELECT customer_id, count(*) AS n FROM payments WHERE status = 'completed' AND external_transaction_id IS NULL GROUP BY 1",
    ),
    (
        "every gateway charge belongs to one completed payment",
        "SELECT customer_id, count(*) AS n FROM (SELECT external_transaction_id, min(customer_id) AS customer_id FROM payments \
             WHERE external_transaction_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1 OR bool_and(status <> 'completed')) d GROUP BY 1",
    ),
];

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    customer_id: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Runs the money checks over every merchant, logs what is broken and records the result (an
/// administrator's button, and the nightly job).
pub fn run_and_record(conn: &mut PgConnection) -> QueryResult<Vec<Finding>> {
    let findings = check_invariants(conn)?;
    for finding in &findings {
        log::error!("money invariant broken at customer {}: {finding}", finding.customer_id);
    }
    record_check(conn, &findings)?;
    Ok(findings)
}

/// Runs every invariant over every merchant; returns what is broken, by merchant.
pub fn check_invariants(conn: &mut PgConnection) -> QueryResult<Vec<Finding>> {
    let mut findings = Vec::new();
    for (rule, sql) in INVARIANTS {
        for broken in diesel::sql_query(sql).load::<Count>(conn)? {
            findings.push(Finding { rule: rule.to_string(), customer_id: broken.customer_id, rows: broken.n });
        }
    }
    Ok(findings)
}
