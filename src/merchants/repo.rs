//! Every query the merchants' area makes. Each one is given the customers the caller is linked to
//! (read on every request) and never reaches past them.

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::BoxedSqlQuery;
use diesel::sql_types::{Array, BigInt, Bool, Date, Int8, Nullable, Numeric, Text, Timestamptz};
use uuid::Uuid;

use super::domain::{MinorUnits, PaymentFilter};
use super::MerchantError;
use crate::orders::pipeline::ApiPaymentStart;
use crate::payments::refunds::Refund;
use crate::payments::PaymentStatus;
use crate::schema::{
    api_idempotency_keys, api_revoked_tokens, audit_log, balance_transactions, customer_balances, customers, invariant_checks,
    payments, refunds, user_customers, users,
};

/// Who is calling, with the customers they are linked to.
#[derive(Debug, Clone, QueryableByName)]
pub struct Principal {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub email: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Array<Int8>)]
    pub customers: Vec<i64>,
    #[diesel(sql_type = Bool)]
    pub revoked: bool,
}

impl Principal {
    pub fn sees(&self, customer_id: i64) -> bool {
        self.customers.contains(&customer_id)
    }
}

/// The user, their links and whether this token was revoked: one query, on every API request.
pub fn principal(conn: &mut PgConnection, user_id: i64, jti: Uuid) -> QueryResult<Option<Principal>> {
    diesel::sql_query(
        "SELECT u.id, u.email, u.name, \
             ARRAY(SELECT customer_id FROM user_customers WHERE user_id = u.id ORDER BY customer_id) AS customers, \
             EXISTS (SELECT 1 FROM api_revoked_tokens WHERE jti = $2) AS revoked \
         FROM users u WHERE u.id = $1",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<diesel::sql_types::Uuid, _>(jti)
    .get_result(conn)
    .optional()
}

/// The customers a user is linked to.
pub fn links(conn: &mut PgConnection, user_id: i64) -> QueryResult<Vec<i64>> {
    user_customers::table.filter(user_customers::user_id.eq(user_id)).order(user_customers::customer_id).select(user_customers::customer_id).load(conn)
}

pub fn revoke_token(conn: &mut PgConnection, jti: Uuid, user_id: i64, expires_at: DateTime<Utc>) -> QueryResult<()> {
    diesel::insert_into(api_revoked_tokens::table)
        .values((api_revoked_tokens::jti.eq(jti), api_revoked_tokens::user_id.eq(user_id), api_revoked_tokens::expires_at.eq(expires_at)))
        .on_conflict_do_nothing()
        .execute(conn)
        .map(drop)
}

// --- customers ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = customers, check_for_backend(diesel::pg::Pg))]
pub struct Customer {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub country: Option<String>,
}

#[derive(Debug, Clone, Queryable)]
pub struct LinkedUser {
    pub customer_id: i64,
    pub id: i64,
    pub email: String,
    pub name: String,
}

/// Visible customers, newest first, `limit + 1` of them from the cursor on.
pub fn customers_page(conn: &mut PgConnection, visible: &[i64], after: Option<i64>, before: Option<i64>, limit: i64) -> QueryResult<Vec<Customer>> {
    let mut query = customers::table.filter(customers::id.eq_any(visible)).select(Customer::as_select()).into_boxed();
    if let Some(before) = before {
        let mut newer: Vec<Customer> =
            query.filter(customers::id.gt(before)).order(customers::id.asc()).limit(limit + 1).load(conn)?;
        newer.reverse();
        return Ok(newer);
    }
    if let Some(after) = after {
        query = query.filter(customers::id.lt(after));
    }
    query.order(customers::id.desc()).limit(limit + 1).load(conn)
}

/// These customers, by id.
pub fn customers(conn: &mut PgConnection, ids: &[i64]) -> QueryResult<Vec<Customer>> {
    customers::table.filter(customers::id.eq_any(ids)).order(customers::id).select(Customer::as_select()).load(conn)
}

pub fn customer(conn: &mut PgConnection, id: i64) -> QueryResult<Option<Customer>> {
    customers::table.find(id).select(Customer::as_select()).first(conn).optional()
}

pub fn linked_users(conn: &mut PgConnection, customer_ids: &[i64]) -> QueryResult<Vec<LinkedUser>> {
    user_customers::table
        .inner_join(users::table)
        .filter(user_customers::customer_id.eq_any(customer_ids))
        .order((user_customers::customer_id, users::id))
        .select((user_customers::customer_id, users::id, users::email, users::name))
        .load(conn)
}

/// A new customer, with its creator linked to it.
pub fn create_customer(conn: &mut PgConnection, user_id: i64, name: &str, country: Option<&str>) -> QueryResult<Customer> {
    conn.transaction(|conn| {
        let customer: Customer = diesel::insert_into(customers::table)
            .values((customers::name.eq(name), customers::country.eq(country)))
            .returning(Customer::as_returning())
            .get_result(conn)?;
        diesel::insert_into(user_customers::table)
            .values((user_customers::user_id.eq(user_id), user_customers::customer_id.eq(customer.id)))
            .execute(conn)?;
        Ok(customer)
    })
}

pub fn update_customer(conn: &mut PgConnection, id: i64, name: Option<&str>, country: Option<Option<&str>>) -> QueryResult<Customer> {
    let current = customers::table.find(id).select(Customer::as_select()).first(conn)?;
    diesel::update(customers::table.find(id))
        .set((
            customers::name.eq(name.unwrap_or(&current.name)),
            customers::country.eq(country.unwrap_or(current.country.as_deref())),
        ))
        .returning(Customer::as_returning())
        .get_result(conn)
}

/// Links a user to a customer (again is no change).
pub fn link(conn: &mut PgConnection, user_id: i64, customer_id: i64) -> QueryResult<()> {
    diesel::insert_into(user_customers::table)
        .values((user_customers::user_id.eq(user_id), user_customers::customer_id.eq(customer_id)))
        .on_conflict_do_nothing()
        .execute(conn)
        .map(drop)
}

/// Links the user with this email to the customer (again is no change). The acting user is
/// written to the audit log.
pub fn link_user(conn: &mut PgConnection, customer_id: i64, email: &str, by: i64) -> Result<(), MerchantError> {
    conn.transaction(|conn| {
        let user = crate::auth::repo::find_by_email(conn, email)?.ok_or(MerchantError::UnknownEmail)?.id;
        let added = diesel::insert_into(user_customers::table)
            .values((user_customers::user_id.eq(user), user_customers::customer_id.eq(customer_id)))
            .on_conflict_do_nothing()
            .execute(conn)?;
        if added > 0 {
            audit(conn, Some(by), "link_user", &format!("customer {customer_id}"), &format!("linked user {user}"))?;
        }
        Ok(())
    })
}

/// Unlinks a user; the last link of a customer stays (someone must be able to see its money).
/// The customer's row is locked while the links are counted, so two unlinks cannot both pass.
pub fn unlink_user(conn: &mut PgConnection, customer_id: i64, user_id: i64, by: i64) -> Result<(), MerchantError> {
    conn.transaction(|conn| {
        customers::table.find(customer_id).select(customers::id).for_update().first::<i64>(conn)?;
        let linked: Vec<i64> =
            user_customers::table.filter(user_customers::customer_id.eq(customer_id)).select(user_customers::user_id).load(conn)?;
        if !linked.contains(&user_id) {
            return Err(MerchantError::NotFound("user"));
        }
        if linked.len() == 1 {
            return Err(MerchantError::LastLinkedUser);
        }
        diesel::delete(user_customers::table.find((user_id, customer_id))).execute(conn)?;
        audit(conn, Some(by), "unlink_user", &format!("customer {customer_id}"), &format!("unlinked user {user_id}"))?;
        Ok(())
    })
}

pub fn audit(conn: &mut PgConnection, user_id: Option<i64>, action: &str, subject: &str, note: &str) -> QueryResult<()> {
    diesel::insert_into(audit_log::table)
        .values((audit_log::user_id.eq(user_id), audit_log::action.eq(action), audit_log::subject.eq(subject), audit_log::note.eq(note)))
        .execute(conn)
        .map(drop)
}

// --- balances -----------------------------------------------------------------------------------

#[derive(Debug, Clone, Queryable)]
pub struct Balance {
    pub customer_id: i64,
    pub currency: String,
    pub available: BigDecimal,
}

pub fn balances(conn: &mut PgConnection, customer_ids: &[i64]) -> QueryResult<Vec<Balance>> {
    customer_balances::table
        .filter(customer_balances::customer_id.eq_any(customer_ids))
        .order((customer_balances::customer_id, customer_balances::currency))
        .select((customer_balances::customer_id, customer_balances::currency, customer_balances::available))
        .load(conn)
}

#[derive(Debug, Clone, Queryable)]
pub struct LedgerEntry {
    pub id: i64,
    pub kind: String,
    pub amount: BigDecimal,
    pub currency: String,
    pub source: Uuid,
    pub created_at: DateTime<Utc>,
}

/// One customer's ledger, newest first, `limit + 1` entries from the cursor on.
pub fn ledger_page(conn: &mut PgConnection, customer_id: i64, after: Option<i64>, before: Option<i64>, limit: i64) -> QueryResult<Vec<LedgerEntry>> {
    let columns = (
        balance_transactions::id,
        balance_transactions::kind,
        balance_transactions::amount,
        balance_transactions::currency,
        balance_transactions::source,
        balance_transactions::created_at,
    );
    let mine = balance_transactions::table.filter(balance_transactions::customer_id.eq(customer_id)).select(columns).into_boxed();
    if let Some(before) = before {
        let mut newer: Vec<LedgerEntry> =
            mine.filter(balance_transactions::id.gt(before)).order(balance_transactions::id.asc()).limit(limit + 1).load(conn)?;
        newer.reverse();
        return Ok(newer);
    }
    let mine = match after {
        Some(after) => mine.filter(balance_transactions::id.lt(after)),
        None => mine,
    };
    mine.order(balance_transactions::id.desc()).limit(limit + 1).load(conn)
}

pub fn ledger_entry_customer(conn: &mut PgConnection, id: i64) -> QueryResult<Option<i64>> {
    balance_transactions::table.find(id).select(balance_transactions::customer_id).first(conn).optional()
}

// --- payments -----------------------------------------------------------------------------------

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
    pub currency: String,
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
    #[diesel(sql_type = Text)]
    pub user_email: String,
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

    pub fn remaining(&self) -> BigDecimal {
        &self.amount - &self.amount_refunded
    }
}

const PAYMENT_COLUMNS: &str = "p.id, p.order_id, p.reference, p.user_id, p.customer_id, p.amount, p.amount_refunded, p.currency, p.status, \
     p.retryable, p.description, p.error_code, p.error_message, p.external_transaction_id, p.created_at, \
     c.name AS customer_name, u.email AS user_email";

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
            c.push("p.user_id = ?", Bind::Int(user));
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
            c.push("p.amount >= ?", Bind::Money(MinorUnits(min).to_decimal()));
        }
        if let Some(max) = filter.amount_lte {
            c.push("p.amount <= ?", Bind::Money(MinorUnits(max).to_decimal()));
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
    pub currency: String,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
    #[diesel(sql_type = Numeric)]
    pub total: BigDecimal,
}

pub fn daily_volume(conn: &mut PgConnection, visible: &[i64], filter: &PaymentFilter) -> QueryResult<Vec<DailyVolume>> {
    let mut c = Conditions::of(filter);
    c.push("p.customer_id = ANY(?)", Bind::Ints(visible.to_vec()));
    let sql = format!(
        "SELECT (p.created_at AT TIME ZONE 'UTC')::date AS day, p.currency, count(*) AS count, sum(p.amount) AS total \
         FROM payments p WHERE true{} GROUP BY 1, 2 ORDER BY 1, 2",
        c.and()
    );
    c.apply(sql).load(conn)
}

/// Two completed payments that look like one charge made twice: the same payer, merchant and
/// amount, minutes apart, the later one not refunded.
#[derive(Debug, Clone, QueryableByName)]
pub struct DoubleCharge {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub first: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub second: Uuid,
    #[diesel(sql_type = Numeric)]
    pub amount: BigDecimal,
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = BigInt)]
    pub apart_seconds: i64,
}

pub fn double_charges(conn: &mut PgConnection, visible: &[i64], within_minutes: i32, since: DateTime<Utc>) -> QueryResult<Vec<DoubleCharge>> {
    diesel::sql_query(
        "SELECT a.reference AS first, b.reference AS second, b.amount, b.currency, \
          extract(epoch FROM b.created_at - a.created_at)::bigint AS apart_seconds \
          FROM payments a JOIN payments b ON b.customer_id = a.customer_id AND b.amount = a.amount \
          AND b.currency = a.currency AND b.user_id = a.user_id AND b.id > a.id \
          AND b.created_at >= a.created_at AND b.created_at < a.created_at + make_interval(mins => $2) \
          WHERE a.customer_id = ANY($1) AND a.created_at >= $3 AND a.status = 'completed' AND b.status = 'completed' \
          AND b.amount_refunded = 0 \
          ORDER BY b.created_at DESC LIMIT 20",
    )
    .bind::<Array<Int8>, _>(visible)
    .bind::<diesel::sql_types::Integer, _>(within_minutes)
    .bind::<Timestamptz, _>(since)
    .load(conn)
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

/// A payment asked for through the API, everything about it decided before it is written —
/// its answer included.
#[derive(Debug, Clone)]
pub struct NewApiPayment {
    pub start: ApiPaymentStart,
    /// The idempotency key, its request's fingerprint, and the answer to store under it.
    pub key: String,
    pub fingerprint: String,
    pub answer: String,
}

#[derive(QueryableByName)]
struct Recorded {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Text)]
    response_body: String,
}

/// The API's fast path for a batch (see `intake`), first half: stores each payment's answer under
/// its idempotency key where the key is free, in one statement. Returns, in batch order, whether
/// each key was free; a payment whose key was taken is left for the general path. The caller
/// writes the payments whose keys were free in the same transaction, so an answer is never stored
/// without its rows.
pub fn record_answers(conn: &mut PgConnection, batch: &[&NewApiPayment]) -> QueryResult<Vec<bool>> {
    let column = |f: fn(&NewApiPayment) -> String| batch.iter().map(|p| f(p)).collect::<Vec<String>>();
    let recorded: Vec<Recorded> = diesel::sql_query(
        "INSERT INTO api_idempotency_keys (user_id, key, fingerprint, status_code, response_body, created_at) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::integer[], $5::text[], $6::timestamptz[]) \
         ON CONFLICT DO NOTHING RETURNING user_id, key, response_body",
    )
    .bind::<Array<Int8>, _>(batch.iter().map(|p| p.start.user_id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(column(|p| p.key.clone()))
    .bind::<Array<Text>, _>(column(|p| p.fingerprint.clone()))
    .bind::<Array<diesel::sql_types::Integer>, _>(vec![201; batch.len()])
    .bind::<Array<Text>, _>(column(|p| p.answer.clone()))
    .bind::<Array<Timestamptz>, _>(batch.iter().map(|p| p.start.created_at).collect::<Vec<_>>())
    .load(conn)?;
    // Matched back by the (unique) answer: two requests of a batch may share a key.
    Ok(batch
        .iter()
        .map(|p| recorded.iter().any(|r| r.user_id == p.start.user_id && r.key == p.key && r.response_body == p.answer))
        .collect())
}

// --- idempotency keys ---------------------------------------------------------------------------

/// What an idempotency key says about a request that carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyState {
    /// First use (or a takeover after the earlier request's lock ran out): go ahead.
    Fresh,
    /// Done before: this is its answer.
    Replay { status: u16, body: String },
    /// The same key is on another request, still running.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

/// Claims the key for this request, or says why not. Keys older than `expires_before` are
/// forgotten (Stripe keeps them 24 hours); a request in flight holds it until `lock_until`.
pub fn claim_key(
    conn: &mut PgConnection,
    user_id: i64,
    key: &str,
    fingerprint: &str,
    now: DateTime<Utc>,
    lock_until: DateTime<Utc>,
    expires_before: DateTime<Utc>,
) -> QueryResult<KeyState> {
    conn.transaction(|conn| {
        let claimed = diesel::sql_query(
            "INSERT INTO api_idempotency_keys AS k (user_id, key, fingerprint, locked_until, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, locked_until = EXCLUDED.locked_until, \
                 created_at = EXCLUDED.created_at, status_code = NULL, response_body = NULL \
             WHERE k.created_at < $6",
        )
        .bind::<BigInt, _>(user_id)
        .bind::<Text, _>(key)
        .bind::<Text, _>(fingerprint)
        .bind::<Timestamptz, _>(lock_until)
        .bind::<Timestamptz, _>(now)
        .bind::<Timestamptz, _>(expires_before)
        .execute(conn)?;
        if claimed == 1 {
            return Ok(KeyState::Fresh);
        }
        let (stored, status, body, locked): (String, Option<i32>, Option<String>, Option<DateTime<Utc>>) = api_idempotency_keys::table
            .find((user_id, key))
            .select((
                api_idempotency_keys::fingerprint,
                api_idempotency_keys::status_code,
                api_idempotency_keys::response_body,
                api_idempotency_keys::locked_until,
            ))
            .for_update()
            .first(conn)?;
        if stored != fingerprint {
            return Ok(KeyState::Mismatch);
        }
        if let (Some(status), Some(body)) = (status, body) {
            return Ok(KeyState::Replay { status: status as u16, body });
        }
        if locked.is_some_and(|l| l > now) {
            return Ok(KeyState::InFlight);
        }
        // The request that held it vanished before answering (nothing it did was committed
        // without its answer): this one takes over.
        diesel::update(api_idempotency_keys::table.find((user_id, key)))
            .set(api_idempotency_keys::locked_until.eq(lock_until))
            .execute(conn)?;
        Ok(KeyState::Fresh)
    })
}

/// Stores the answer under the key — in the same transaction as the work it answers for, when
/// there is work.
pub fn store_answer(conn: &mut PgConnection, user_id: i64, key: &str, status: u16, body: &str) -> QueryResult<()> {
    diesel::update(api_idempotency_keys::table.find((user_id, key)))
        .set((
            api_idempotency_keys::status_code.eq(i32::from(status)),
            api_idempotency_keys::response_body.eq(body),
            api_idempotency_keys::locked_until.eq(None::<DateTime<Utc>>),
        ))
        .execute(conn)
        .map(drop)
}

/// Lets the key go: the answer is one a retry may change.
pub fn release_key(conn: &mut PgConnection, user_id: i64, key: &str) -> QueryResult<()> {
    diesel::delete(api_idempotency_keys::table.find((user_id, key)).filter(api_idempotency_keys::status_code.is_null()))
        .execute(conn)
        .map(drop)
}

pub fn prune_keys(conn: &mut PgConnection, before: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(api_idempotency_keys::table.filter(api_idempotency_keys::created_at.lt(before))).execute(conn)
}

// --- invariants ---------------------------------------------------------------------------------

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
