//! Payments as the merchants see them: filtered, paged by keyset, totalled per day, and
//! suspected double charges.

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::BoxedSqlQuery;
use diesel::sql_types::{Array, BigInt, Bool, Date, Int8, Nullable, Numeric, Text, Timestamptz};
use uuid::Uuid;

use crate::merchants::domain::PaymentFilter;
use crate::payments::{Currency, Money};
use crate::payments::refunds::Refund;
use crate::payments::PaymentStatus;
use crate::schema::{
    payments, refunds,
};

/// A payment as the merchants' views show it.
#[derive(Debug, Clone, QueryableByName)]
pub struct PaymentRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub order_id: i64,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub reference: Uuid,
    #[diesel(sql_type = BigInt)]
    pub user_id: i64,
    #[diesel(sql_type = BigInt)]
    pub customer_id: i64,
    #[diesel(sql_type = Numeric)]
    pub amount: BigDecimal,
    #[diesel(sql_type = Numeric)]
    pub amount_refunded: BigDecimal,
    #[diesel(sql_type = Text)]
    pub currency: Currency,
    #[diesel(sql_type = Text)]
    pub status: PaymentStatus,
    #[diesel(sql_type = Bool)]
    pub retryable: bool,
    #[diesel(sql_type = Nullable<Text>)]
    pub description: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error_code: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error_message: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub external_transaction_id: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub customer_name: String,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub customer_public_id: Uuid,
    #[diesel(sql_type = Text)]
    pub user_email: String,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub user_public_id: Uuid,
}

impl PaymentRow {
    /// Nothing more will happen to it: completed, or failed with no retry coming.
    pub fn is_final(&self) -> bool {
        match self.status {
            PaymentStatus::Completed => true,
            PaymentStatus::Failed => !self.retryable,
            _ => false,
        }
    }

    /// Its state as the API and the CSV say it: `refunded` or `partially_refunded` for a
    /// completed payment given back in full or in part (as Stripe's dashboard says), else its
    /// status.
    pub fn state(&self) -> &'static str {
        match self.status {
            PaymentStatus::Completed if self.amount_refunded >= self.amount => "refunded",
            PaymentStatus::Completed if self.amount_refunded > BigDecimal::from(0) => "partially_refunded",
            other => other.as_str(),
        }
    }

    /// Its state in a merchant's words on the dashboard: `state`, with a failure that will be
    /// tried again called "retrying", as the shopper's page calls it.
    pub fn state_words(&self) -> String {
        match self.status {
            PaymentStatus::Failed if self.retryable => "retrying".to_string(),
            _ => self.state().replace('_', " "),
        }
    }

    /// What it charged.
    pub fn money(&self) -> Money {
        Money::stored(self.amount.clone(), self.currency)
    }

    /// What has been given back of it.
    pub fn refunded(&self) -> Money {
        Money::stored(self.amount_refunded.clone(), self.currency)
    }

    /// What is left to refund.
    pub fn remaining(&self) -> Money {
        Money::stored(&self.amount - &self.amount_refunded, self.currency)
    }
}

const PAYMENT_COLUMNS: &str = "p.id, p.order_id, p.reference, p.user_id, p.customer_id, p.amount, p.amount_refunded, p.currency, p.status, \
     p.retryable, p.description, p.error_code, p.error_message, p.external_transaction_id, p.created_at, \
     c.name AS customer_name, c.public_id AS customer_public_id, u.email AS user_email, u.public_id AS user_public_id";

/// A value bound into a query built at run time.
enum Bind {
    Int(i64),
    Ints(Vec<i64>),
    At(DateTime<Utc>),
    Text(String),
    Id(Uuid),
    Money(BigDecimal),
}

/// The `WHERE` conditions of a payment filter, on alias `p`, with their values.
struct Conditions {
    sql: Vec<String>,
    binds: Vec<Bind>,
}

impl Conditions {
    fn new() -> Conditions {
        Conditions { sql: Vec::new(), binds: Vec::new() }
    }

    fn push(&mut self, template: &str, value: Bind) {
        self.binds.push(value);
        self.sql.push(template.replace('?', &format!("${}", self.binds.len())));
    }

    fn of(filter: &PaymentFilter) -> Conditions {
        let mut c = Conditions::new();
        if let Some(user) = filter.user {
            c.push("p.user_id = (SELECT id FROM users WHERE public_id = ?)", Bind::Id(user));
        }
        match &filter.reference {
            Some(Some(reference)) => c.push("p.reference = ?", Bind::Id(*reference)),
            Some(None) => c.sql.push("false".into()),
            None => {}
        }
        if let Some(status) = filter.status {
            c.push("p.status = ?", Bind::Text(status.as_str().into()));
        }
        if let Some(from) = filter.created_from {
            c.push("p.created_at >= ?", Bind::At(from));
        }
        if let Some(before) = filter.created_before {
            c.push("p.created_at < ?", Bind::At(before));
        }
        if let Some(min) = filter.amount_gte {
            c.push("p.amount >= ?", Bind::Money(BigDecimal::new(min.into(), 2)));
        }
        if let Some(max) = filter.amount_lte {
            c.push("p.amount <= ?", Bind::Money(BigDecimal::new(max.into(), 2)));
        }
        c
    }

    fn and(&self) -> String {
        self.sql.iter().map(|s| format!(" AND {s}")).collect()
    }

    fn apply(self, sql: String) -> BoxedSqlQuery<'static, Pg, diesel::query_builder::SqlQuery> {
        let mut query = diesel::sql_query(sql).into_boxed::<Pg>();
        for bind in self.binds {
            query = match bind {
                Bind::Int(v) => query.bind::<BigInt, _>(v),
                Bind::Ints(v) => query.bind::<Array<Int8>, _>(v),
                Bind::At(v) => query.bind::<Timestamptz, _>(v),
                Bind::Text(v) => query.bind::<Text, _>(v),
                Bind::Id(v) => query.bind::<diesel::sql_types::Uuid, _>(v),
                Bind::Money(v) => query.bind::<Numeric, _>(v),
            };
        }
        query
    }
}

/// Where a page of payments starts: strictly older (`After`) or newer (`Before`) than a row.
#[derive(Debug, Clone, Copy)]
pub enum Keyset {
    After(DateTime<Utc>, i64),
    Before(DateTime<Utc>, i64),
}

/// Up to `limit` payments of the `visible` customers that match the filter, newest first (or, for
/// `Keyset::Before`, the nearest newer ones, still returned newest first).
///
/// One query: for each visible customer, its newest matching rows through the index on
/// `(customer_id, created_at, id)` (or the status / user variant), then merged — so a page costs a
/// few index probes however many payments there are, and a user linked to several customers does
/// not make PostgreSQL sort all of their rows.
pub fn payments_page(conn: &mut PgConnection, visible: &[i64], filter: &PaymentFilter, from: Option<Keyset>, limit: i64) -> QueryResult<Vec<PaymentRow>> {
    let newer = matches!(from, Some(Keyset::Before(..)));
    let (sql, conditions) = page_query(visible, filter, from, limit, "");
    let mut rows: Vec<PaymentRow> = conditions.apply(sql).load(conn)?;
    if newer {
        rows.reverse();
    }
    Ok(rows)
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

/// PostgreSQL's plan for a page of payments, as `payments_page` would ask for it: for the
/// benchmark, which shows that every filter is served from an index.
pub fn explain_payments_page(conn: &mut PgConnection, visible: &[i64], filter: &PaymentFilter, limit: i64) -> QueryResult<Vec<String>> {
    let (sql, conditions) = page_query(visible, filter, None, limit, "EXPLAIN (ANALYZE, BUFFERS OFF, TIMING OFF, SUMMARY OFF) ");
    Ok(conditions.apply(sql).load::<PlanLine>(conn)?.into_iter().map(|l| l.line).collect())
}

fn page_query(visible: &[i64], filter: &PaymentFilter, from: Option<Keyset>, limit: i64, prefix: &str) -> (String, Conditions) {
    let mut c = Conditions::of(filter);
    let newer = matches!(from, Some(Keyset::Before(..)));
    let (at, id, op) = match from {
        Some(Keyset::After(at, id)) => (Some(at), id, "<"),
        Some(Keyset::Before(at, id)) => (Some(at), id, ">"),
        None => (None, 0, ""),
    };
    if let Some(at) = at {
        c.binds.push(Bind::At(at));
        c.binds.push(Bind::Int(id));
        c.sql.push(format!("(p.created_at, p.id) {op} (${}, ${})", c.binds.len() - 1, c.binds.len()));
    }
    let order = if newer { "ASC" } else { "DESC" };
    c.binds.push(Bind::Ints(visible.to_vec()));
    let customers = c.binds.len();
    c.binds.push(Bind::Int(limit));
    let limit_at = c.binds.len();
    let sql = format!(
        "{prefix}SELECT {PAYMENT_COLUMNS} FROM unnest(${customers}::bigint[]) AS v(customer_id) \
         CROSS JOIN LATERAL (SELECT * FROM payments p WHERE p.customer_id = v.customer_id{conds} \
             ORDER BY p.created_at {order}, p.id {order} LIMIT ${limit_at}) p \
         JOIN customers c ON c.id = p.customer_id JOIN users u ON u.id = p.user_id \
         ORDER BY p.created_at {order}, p.id {order} LIMIT ${limit_at}",
        conds = c.and(),
    );
    (sql, c)
}

/// The position of a visible payment, for a cursor.
pub fn payment_position(conn: &mut PgConnection, visible: &[i64], reference: Uuid) -> QueryResult<Option<(DateTime<Utc>, i64)>> {
    payments::table
        .filter(payments::reference.eq(reference).and(payments::customer_id.eq_any(visible)))
        .select((payments::created_at, payments::id))
        .first(conn)
        .optional()
}

pub fn payment(conn: &mut PgConnection, visible: &[i64], reference: Uuid) -> QueryResult<Option<PaymentRow>> {
    let mut c = Conditions::new();
    c.push("p.reference = ?", Bind::Id(reference));
    c.push("p.customer_id = ANY(?)", Bind::Ints(visible.to_vec()));
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments p JOIN customers c ON c.id = p.customer_id JOIN users u ON u.id = p.user_id WHERE {}",
        c.sql.join(" AND ")
    );
    c.apply(sql).get_result(conn).optional()
}

pub fn payment_by_id(conn: &mut PgConnection, id: i64) -> QueryResult<PaymentRow> {
    let mut c = Conditions::new();
    c.push("p.id = ?", Bind::Int(id));
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments p JOIN customers c ON c.id = p.customer_id JOIN users u ON u.id = p.user_id WHERE {}",
        c.sql.join(" AND ")
    );
    c.apply(sql).get_result(conn)
}

/// Count and sum per day and currency of every visible payment the filter matches: the totals
/// and the chart of a dashboard page, in one pass.
#[derive(Debug, Clone, QueryableByName)]
pub struct DailyVolume {
    #[diesel(sql_type = Date)]
    pub day: NaiveDate,
    #[diesel(sql_type = Text)]
    pub currency: Currency,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
    /// Gross of the day's completed payments (what the chart draws).
    #[diesel(sql_type = Numeric)]
    pub total: BigDecimal,
    /// What has been refunded of them.
    #[diesel(sql_type = Numeric)]
    pub refunded: BigDecimal,
}

impl DailyVolume {
    pub fn money(&self) -> Money {
        Money::stored(self.total.clone(), self.currency)
    }
}

pub fn daily_volume(conn: &mut PgConnection, visible: &[i64], filter: &PaymentFilter) -> QueryResult<Vec<DailyVolume>> {
    let mut c = Conditions::of(filter);
    c.push("p.customer_id = ANY(?)", Bind::Ints(visible.to_vec()));
    let sql = format!(
        "SELECT (p.created_at AT TIME ZONE 'UTC')::date AS day, p.currency, count(*) AS count, \
             coalesce(sum(p.amount), 0) AS total, coalesce(sum(p.amount_refunded), 0) AS refunded \
         FROM payments p WHERE p.status = 'completed'{} GROUP BY 1, 2 ORDER BY 1, 2",
        c.and()
    );
    c.apply(sql).load(conn)
}

// --- refunds ------------------------------------------------------------------------------------


/// The payment references of these payments' refunds (for the refund objects' `payment`).
pub fn refund_by_reference(conn: &mut PgConnection, visible: &[i64], reference: Uuid) -> QueryResult<Option<Refund>> {
    refunds::table
        .filter(refunds::reference.eq(reference).and(refunds::customer_id.eq_any(visible)))
        .select(Refund::as_select())
        .first(conn)
        .optional()
}

