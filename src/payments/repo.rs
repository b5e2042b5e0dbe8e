//! Every query the payments area makes.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text, Timestamptz};
use serde::Serialize;
use uuid::Uuid;

use super::domain::{IdempotencyKey, PayOrder, PaymentStatus};
use super::money::{Currency, Money};
use crate::schema::{payment_events, payments};

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Serialize)]
#[diesel(table_name = payments, check_for_backend(diesel::pg::Pg))]
pub struct Payment {
    pub id: i64,
    pub reference: Uuid,
    pub user_id: i64,
    pub order_id: i64,
    pub customer_id: i64,
    pub amount: BigDecimal,
    pub currency: Currency,
    #[serde(serialize_with = "serialize_status")]
    pub status: PaymentStatus,
    pub idempotency_key: String,
    pub external_transaction_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub retryable: bool,
    pub retry_count: i32,
    pub attempts: i32,
    pub processing_started_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The key the gateway knows this payment by (see `domain::gateway_key`).
    pub gateway_key: String,
    /// While `requires_confirmation`: when the gateway is asked again.
    pub next_check_at: Option<DateTime<Utc>>,
    pub confirmation_checks: i32,
    pub description: Option<String>,
    /// A test method the simulations understand (`pm_card_visa`, `pm_card_chargeDeclined`).
    pub payment_method: Option<String>,
    /// The sum of the refunds that have not failed.
    pub amount_refunded: BigDecimal,
}

impl Payment {
    /// What it charges.
    pub fn money(&self) -> Money {
        Money::stored(self.amount.clone(), self.currency)
    }
}

fn serialize_status<S: serde::Serializer>(status: &PaymentStatus, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(status.as_str())
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = payment_events, check_for_backend(diesel::pg::Pg))]
pub struct PaymentEvent {
    pub from_status: Option<String>,
    pub to_status: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

/// A payment's history in the words the person paying reads (the merchant too, beside each step's
/// reason), one per event: the last step of a payment nothing more will happen to is final.
pub fn history_in_words(events: &[PaymentEvent], payment_is_final: bool) -> Vec<&'static str> {
    let last = events.len().saturating_sub(1);
    events
        .iter()
        .enumerate()
        .map(|(i, e)| super::domain::history_words(&e.to_status, e.from_status.as_deref(), i == last && payment_is_final))
        .collect()
}

/// Creates the order's payment unless it exists, in one statement: concurrent callers cannot
/// both insert (the unique key decides) and nobody checks before acting. The amount is copied
/// from the order, which must belong to the user and still be pending.
///
/// The conflict target is left out on purpose: with several unique indexes (key, order, gateway
/// key) and only one named as arbiter, two racing inserts each wait on the other's speculative
/// index entry and PostgreSQL reports a deadlock (the 32-thread race test found it). Without a
/// target every unique index arbitrates.
///
/// The order row is key-share-locked, so an order cannot expire between "has no payment" and
/// "gets one": expiry locks the order `FOR UPDATE` before it looks (see
/// `orders::repo::expire_if_abandoned`), which waits for this lock and is waited for by it. A
/// plain `FOR SHARE` would also block the settle's `UPDATE orders` and deadlock concurrent payers
/// (the 32-thread race test showed it); a key-share lock does not.
pub fn insert_for_order(
    conn: &mut PgConnection,
    user_id: i64,
    order_id: i64,
    key: &IdempotencyKey,
    reference: Uuid,
) -> QueryResult<Option<Payment>> {
    // The creation is logged by the same statement: a payment never exists without its first
    // event. The new row comes back, locked by this transaction as any row it inserted.
    diesel::sql_query(
        "WITH payable AS ( \
             SELECT o.user_id, o.id, o.customer_id, o.total, o.currency FROM orders o \
             WHERE o.id = $1 AND o.user_id = $2 AND o.status = 'pending' FOR KEY SHARE), \
         created AS ( \
             INSERT INTO payments (user_id, order_id, customer_id, amount, currency, idempotency_key, reference, gateway_key) \
             SELECT user_id, id, customer_id, total, currency, $3, $4, $5 FROM payable \
             ON CONFLICT DO NOTHING \
             RETURNING *), \
         logged AS ( \
             INSERT INTO payment_events (payment_id, to_status, reason) \
             SELECT id, 'pending', $6 FROM created) \
         SELECT * FROM created",
    )
    .bind::<BigInt, _>(order_id)
    .bind::<BigInt, _>(user_id)
    .bind::<Text, _>(key.as_str())
    .bind::<diesel::sql_types::Uuid, _>(reference)
    .bind::<Text, _>(super::domain::gateway_key(reference))
    .bind::<Text, _>(created_reason(order_id))
    .get_result(conn)
    .optional()
}

/// The reason a payment's first event gives.
pub fn created_reason(order_id: i64) -> String {
    format!("created for order #{order_id}")
}

/// What a payment made through the API says about itself.
pub fn describe(conn: &mut PgConnection, id: i64, description: Option<&str>, payment_method: Option<&str>) -> QueryResult<Payment> {
    diesel::update(payments::table.find(id))
        .set((payments::description.eq(description), payments::payment_method.eq(payment_method)))
        .returning(Payment::as_returning())
        .get_result(conn)
}

pub fn lock_by_key(conn: &mut PgConnection, key: &IdempotencyKey) -> QueryResult<Option<Payment>> {
    payments::table
        .filter(payments::idempotency_key.eq(key.as_str()))
        .for_update()
        .select(Payment::as_select())
        .first(conn)
        .optional()
}

/// Claims the payment for one gateway attempt and logs why, in one statement. `attempts` is the
/// attempt's fencing token.
pub fn start_attempt(
    conn: &mut PgConnection,
    id: i64,
    from: PaymentStatus,
    reason: &str,
    now: DateTime<Utc>,
) -> QueryResult<Payment> {
    diesel::sql_query(
        "WITH claimed AS ( \
             UPDATE payments SET status = 'processing', attempts = attempts + 1, \
                 processing_started_at = $2, updated_at = $2 \
             WHERE id = $1 RETURNING *), \
         logged AS ( \
             INSERT INTO payment_events (payment_id, from_status, to_status, reason) \
             SELECT id, $3, 'processing', $4 FROM claimed) \
         SELECT * FROM claimed",
    )
    .bind::<BigInt, _>(id)
    .bind::<Timestamptz, _>(now)
    .bind::<Text, _>(from.as_str())
    .bind::<Text, _>(reason)
    .get_result(conn)
}

/// A payment claimed by `claim_due`, with what it was before the claim.
#[derive(Debug, QueryableByName)]
pub struct ClaimedPayment {
    #[diesel(embed)]
    pub payment: Payment,
    #[diesel(sql_type = Text)]
    pub from_status: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    pub previous_code: Option<String>,
}

/// Claims, in one statement, the payments of these orders that are due an attempt — pending,
/// failed and retryable, or processing with an attempt older than `lost_before` — bumping each
/// one's fencing token and logging why. Rows are locked in id order, so concurrent batches
/// cannot deadlock on each other. Payments not due are left alone (and not returned).
pub fn claim_due(
    conn: &mut PgConnection,
    orders: &[PayOrder],
    lost_before: DateTime<Utc>,
    max_attempts: i32,
    now: DateTime<Utc>,
) -> QueryResult<Vec<ClaimedPayment>> {
    diesel::sql_query(
        "WITH due AS ( \
             SELECT id, status AS from_status, error_code AS previous_code, retry_count, error_message FROM payments \
             WHERE (order_id, user_id) IN (SELECT * FROM unnest($1::bigint[], $5::bigint[])) \
               AND (status = 'pending' OR (status = 'failed' AND retryable) \
                    OR (status = 'processing' AND processing_started_at <= $2)) \
             ORDER BY id FOR UPDATE), \
         claimed AS ( \
             UPDATE payments p SET status = 'processing', attempts = p.attempts + 1, processing_started_at = $3, updated_at = $3 \
             FROM due WHERE p.id = due.id \
             RETURNING p.*, due.from_status, due.previous_code, \
                 CASE due.from_status \
                     WHEN 'pending' THEN 'charging the card' \
                     WHEN 'processing' THEN 'the previous attempt stopped answering; recovering it through the gateway' \
                     ELSE 'attempt ' || (due.retry_count + 1) || ' of ' || $4 || ' after: ' || coalesce(due.error_message, 'a transient failure') \
                 END AS reason), \
         logged AS ( \
             INSERT INTO payment_events (payment_id, from_status, to_status, reason) \
             SELECT id, from_status, 'processing', reason FROM claimed) \
         SELECT * FROM claimed",
    )
    .bind::<diesel::sql_types::Array<BigInt>, _>(orders.iter().map(|o| o.order_id).collect::<Vec<_>>())
    .bind::<Timestamptz, _>(lost_before)
    .bind::<Timestamptz, _>(now)
    .bind::<Integer, _>(max_attempts)
    .bind::<diesel::sql_types::Array<BigInt>, _>(orders.iter().map(|o| o.user_id).collect::<Vec<_>>())
    .load(conn)
}

/// The payments of these orders, as they are; only those of the order's payer.
pub fn for_orders(conn: &mut PgConnection, orders: &[PayOrder]) -> QueryResult<Vec<Payment>> {
    let ids: Vec<i64> = orders.iter().map(|o| o.order_id).collect();
    let found: Vec<Payment> = payments::table.filter(payments::order_id.eq_any(ids)).select(Payment::as_select()).load(conn)?;
    Ok(found.into_iter().filter(|p| orders.iter().any(|o| o.order_id == p.order_id && o.user_id == p.user_id)).collect())
}

/// Settles attempts `(payment id, fencing token, gateway charge id)`, all made from status
/// `from`, as completed and logs each, in one statement: each completes only if that attempt
/// still owns its payment. The same statement credits each customer's balance and writes the
/// ledger entries, so money taken is never missing from a balance (balance rows are locked in key
/// order, so concurrent settlements cannot deadlock on them). Returns the payments it completed (an attempt that lost its claim is
/// simply absent).
pub fn complete_many(conn: &mut PgConnection, attempts: &[(i64, i32, String)], from: PaymentStatus, now: DateTime<Utc>) -> QueryResult<Vec<Payment>> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = attempts.iter().map(|a| a.0).collect();
    let tokens: Vec<i32> = attempts.iter().map(|a| a.1).collect();
    let charges: Vec<String> = attempts.iter().map(|a| a.2.clone()).collect();
    diesel::sql_query(
        "WITH settled AS (SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[]) AS s(id, attempts, charge)), \
         completed AS ( \
             UPDATE payments p SET status = 'completed', external_transaction_id = s.charge, \
                 error_code = NULL, error_message = NULL, next_check_at = NULL, updated_at = $4 \
             FROM settled s WHERE p.id = s.id AND p.status = $5 AND p.attempts = s.attempts RETURNING p.*), \
         logged AS ( \
             INSERT INTO payment_events (payment_id, from_status, to_status, reason) \
             SELECT id, $5, 'completed', 'charged, gateway transaction ' || external_transaction_id FROM completed), \
         entered AS ( \
             INSERT INTO balance_transactions (customer_id, type, amount, currency, source, created_at) \
             SELECT customer_id, 'payment', amount, currency, reference, $4 FROM completed), \
         credited AS ( \
             INSERT INTO customer_balances AS b (customer_id, currency, available, updated_at) \
             SELECT customer_id, currency, sum(amount), $4 FROM completed GROUP BY customer_id, currency \
             ORDER BY customer_id, currency \
             ON CONFLICT (customer_id, currency) DO UPDATE SET available = b.available + EXCLUDED.available, updated_at = $4) \
         SELECT * FROM completed",
    )
    .bind::<diesel::sql_types::Array<BigInt>, _>(ids)
    .bind::<diesel::sql_types::Array<Integer>, _>(tokens)
    .bind::<diesel::sql_types::Array<Text>, _>(charges)
    .bind::<Timestamptz, _>(now)
    .bind::<Text, _>(from.as_str())
    .load(conn)
}

/// Parks the attempt `attempts` in `requires_confirmation` until `next_check_at`; `None` when
/// that attempt no longer owns the row.
#[allow(clippy::too_many_arguments)]
pub fn await_confirmation(
    conn: &mut PgConnection,
    id: i64,
    attempts: i32,
    from: PaymentStatus,
    code: &str,
    message: &str,
    next_check_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> QueryResult<Option<Payment>> {
    diesel::update(payments::table.find(id).filter(payments::status.eq(from).and(payments::attempts.eq(attempts))))
        .set((
            payments::status.eq(PaymentStatus::RequiresConfirmation),
            payments::error_code.eq(code),
            payments::error_message.eq(message),
            payments::retryable.eq(false),
            payments::next_check_at.eq(next_check_at),
            payments::updated_at.eq(now),
        ))
        .returning(Payment::as_returning())
        .get_result(conn)
        .optional()
}

/// A locked, failed payment whose last attempt may have charged goes to `requires_confirmation`.
pub fn park(conn: &mut PgConnection, id: i64, message: &str, next_check_at: DateTime<Utc>, now: DateTime<Utc>) -> QueryResult<()> {
    diesel::update(payments::table.find(id))
        .set((
            payments::status.eq(PaymentStatus::RequiresConfirmation),
            payments::error_message.eq(message),
            payments::retryable.eq(false),
            payments::next_check_at.eq(next_check_at),
            payments::updated_at.eq(now),
        ))
        .execute(conn)
        .map(drop)
}

/// Takes a payment awaiting confirmation for one check: a new fencing token, and the next check
/// pushed out to `hold_until` so that nobody else checks meanwhile.
pub fn claim_check(conn: &mut PgConnection, id: i64, hold_until: DateTime<Utc>, now: DateTime<Utc>) -> QueryResult<Payment> {
    diesel::update(payments::table.find(id))
        .set((payments::attempts.eq(payments::attempts + 1), payments::next_check_at.eq(hold_until), payments::updated_at.eq(now)))
        .returning(Payment::as_returning())
        .get_result(conn)
}

/// A check that got no answer: count it and ask again at `next_check_at`.
#[allow(clippy::too_many_arguments)]
pub fn recheck_later(
    conn: &mut PgConnection,
    id: i64,
    attempts: i32,
    code: &str,
    message: &str,
    checks: i32,
    next_check_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> QueryResult<Option<Payment>> {
    let held = payments::status.eq(PaymentStatus::RequiresConfirmation).and(payments::attempts.eq(attempts));
    diesel::update(payments::table.find(id).filter(held))
        .set((
            payments::error_code.eq(code),
            payments::error_message.eq(message),
            payments::confirmation_checks.eq(checks),
            payments::next_check_at.eq(next_check_at),
            payments::updated_at.eq(now),
        ))
        .returning(Payment::as_returning())
        .get_result(conn)
        .optional()
}

pub struct Failure<'a> {
    pub code: &'a str,
    pub message: &'a str,
    pub retryable: bool,
    /// Transient failures count against the retry budget.
    pub counts_as_retry: bool,
}

pub fn fail_attempt(
    conn: &mut PgConnection,
    id: i64,
    attempts: i32,
    from: PaymentStatus,
    failure: &Failure<'_>,
    now: DateTime<Utc>,
) -> QueryResult<Option<Payment>> {
    diesel::update(payments::table.find(id).filter(payments::status.eq(from).and(payments::attempts.eq(attempts))))
        .set((
            payments::status.eq(PaymentStatus::Failed),
            payments::next_check_at.eq(None::<DateTime<Utc>>),
            payments::error_code.eq(failure.code),
            payments::error_message.eq(failure.message),
            payments::retryable.eq(failure.retryable),
            payments::retry_count.eq(payments::retry_count + i32::from(failure.counts_as_retry)),
            payments::updated_at.eq(now),
        ))
        .returning(Payment::as_returning())
        .get_result(conn)
        .optional()
}

pub fn record_event(
    conn: &mut PgConnection,
    payment_id: i64,
    from: Option<PaymentStatus>,
    to: PaymentStatus,
    reason: &str,
) -> QueryResult<()> {
    diesel::insert_into(payment_events::table)
        .values((
            payment_events::payment_id.eq(payment_id),
            payment_events::from_status.eq(from.map(PaymentStatus::as_str)),
            payment_events::to_status.eq(to.as_str()),
            payment_events::reason.eq(reason),
        ))
        .execute(conn)
        .map(drop)
}

pub fn lock_by_id(conn: &mut PgConnection, id: i64) -> QueryResult<Option<Payment>> {
    payments::table.find(id).for_update().select(Payment::as_select()).first(conn).optional()
}

pub fn lock_by_order(conn: &mut PgConnection, order_id: i64) -> QueryResult<Option<Payment>> {
    payments::table.filter(payments::order_id.eq(order_id)).for_update().select(Payment::as_select()).first(conn).optional()
}

/// Payments whose outcome the gateway must be asked about: attempts that started before
/// `lost_before` and never settled, and payments awaiting confirmation whose check is due.
pub fn due_for_check(conn: &mut PgConnection, lost_before: DateTime<Utc>, now: DateTime<Utc>, limit: i64) -> QueryResult<Vec<i64>> {
    let lost = payments::status.eq(PaymentStatus::Processing).and(payments::processing_started_at.lt(lost_before));
    let due = payments::status.eq(PaymentStatus::RequiresConfirmation).and(payments::next_check_at.le(now));
    payments::table.filter(lost.or(due)).order(payments::updated_at).limit(limit).select(payments::id).load(conn)
}

/// Payments waiting for the gateway to confirm them, oldest first: the operators' worry list.
pub fn awaiting_confirmation(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<Payment>> {
    payments::table
        .filter(payments::status.eq(PaymentStatus::RequiresConfirmation))
        .order((payments::created_at.asc(), payments::id.asc()))
        .limit(limit)
        .select(Payment::as_select())
        .load(conn)
}

pub fn find_by_reference(conn: &mut PgConnection, reference: Uuid) -> QueryResult<Option<Payment>> {
    payments::table.filter(payments::reference.eq(reference)).select(Payment::as_select()).first(conn).optional()
}

pub fn refuse_pending(conn: &mut PgConnection, id: i64, code: &str, message: &str, now: DateTime<Utc>) -> QueryResult<Payment> {
    diesel::update(payments::table.find(id).filter(payments::status.eq(PaymentStatus::Pending)))
        .set((
            payments::status.eq(PaymentStatus::Failed),
            payments::error_code.eq(code),
            payments::error_message.eq(message),
            payments::retryable.eq(false),
            payments::updated_at.eq(now),
        ))
        .returning(Payment::as_returning())
        .get_result(conn)
}

/// A locked payment that certainly took no money, given up on: no more attempts.
pub fn give_up(conn: &mut PgConnection, id: i64, reason: &str, now: DateTime<Utc>) -> QueryResult<()> {
    diesel::update(payments::table.find(id))
        .set((
            payments::status.eq(PaymentStatus::Failed),
            payments::retryable.eq(false),
            payments::error_message.eq(reason),
            payments::updated_at.eq(now),
        ))
        .execute(conn)
        .map(drop)
}

pub fn reload(conn: &mut PgConnection, id: i64) -> QueryResult<Payment> {
    payments::table.find(id).select(Payment::as_select()).first(conn)
}

/// A payment as its owner may see it: someone else's reference is "not found", not "forbidden".
pub fn find_for_user(conn: &mut PgConnection, reference: Uuid, user_id: i64) -> QueryResult<Option<Payment>> {
    payments::table
        .filter(payments::reference.eq(reference).and(payments::user_id.eq(user_id)))
        .select(Payment::as_select())
        .first(conn)
        .optional()
}

pub fn events(conn: &mut PgConnection, payment_id: i64) -> QueryResult<Vec<PaymentEvent>> {
    payment_events::table
        .filter(payment_events::payment_id.eq(payment_id))
        .order(payment_events::id.asc())
        .select(PaymentEvent::as_select())
        .load(conn)
}
