//! Every query the payments area makes.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use serde::Serialize;
use uuid::Uuid;

use super::domain::{IdempotencyKey, PaymentStatus};
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
    pub currency: String,
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

/// Creates the order's payment unless it exists, in one statement: concurrent callers cannot
/// both insert (the unique key decides) and nobody checks before acting. The amount is copied
/// from the order, which must belong to the user and still be pending.
///
/// The conflict target is left out on purpose: with two unique indexes (key and order) and only
/// one named as arbiter, two racing inserts each wait on the other's speculative index entry and
/// PostgreSQL reports a deadlock (the 32-thread race test found it). Without a target every
/// unique index arbitrates.
pub fn insert_for_order(
    conn: &mut PgConnection,
    user_id: i64,
    order_id: i64,
    key: &IdempotencyKey,
) -> QueryResult<usize> {
    // The creation is logged by the same statement: a payment never exists without its first event.
    diesel::sql_query(
        "WITH created AS ( \
             INSERT INTO payments (user_id, order_id, customer_id, amount, currency, idempotency_key) \
             SELECT o.user_id, o.id, o.customer_id, o.total, o.currency, $3 \
             FROM orders o WHERE o.id = $1 AND o.user_id = $2 AND o.status = 'pending' \
             ON CONFLICT DO NOTHING \
             RETURNING id, order_id) \
         INSERT INTO payment_events (payment_id, to_status, reason) \
         SELECT id, 'pending', 'created for order #' || order_id FROM created",
    )
    .bind::<BigInt, _>(order_id)
    .bind::<BigInt, _>(user_id)
    .bind::<Text, _>(key.as_str())
    .execute(conn)
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

/// Settles the attempt `attempts` as completed, logs it, and marks the order paid, in one
/// statement; `None` when that attempt no longer owns the row.
pub fn complete_attempt(
    conn: &mut PgConnection,
    id: i64,
    attempts: i32,
    transaction_id: &str,
    now: DateTime<Utc>,
) -> QueryResult<Option<Payment>> {
    diesel::sql_query(
        "WITH completed AS ( \
             UPDATE payments SET status = 'completed', external_transaction_id = $3, \
                 error_code = NULL, error_message = NULL, updated_at = $4 \
             WHERE id = $1 AND status = 'processing' AND attempts = $2 RETURNING *), \
         logged AS ( \
             INSERT INTO payment_events (payment_id, from_status, to_status, reason) \
             SELECT id, 'processing', 'completed', 'charged, gateway transaction ' || $3 FROM completed), \
         paid AS ( \
             UPDATE orders SET status = 'paid', updated_at = $4 \
             WHERE id = (SELECT order_id FROM completed) AND status = 'pending') \
         SELECT * FROM completed",
    )
    .bind::<BigInt, _>(id)
    .bind::<diesel::sql_types::Integer, _>(attempts)
    .bind::<Text, _>(transaction_id)
    .bind::<Timestamptz, _>(now)
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
    failure: &Failure<'_>,
    now: DateTime<Utc>,
) -> QueryResult<Option<Payment>> {
    diesel::update(
        payments::table
            .find(id)
            .filter(payments::status.eq(PaymentStatus::Processing).and(payments::attempts.eq(attempts))),
    )
        .set((
            payments::status.eq(PaymentStatus::Failed),
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

pub fn find_by_order(conn: &mut PgConnection, order_id: i64) -> QueryResult<Option<Payment>> {
    payments::table.filter(payments::order_id.eq(order_id)).select(Payment::as_select()).first(conn).optional()
}

/// Payments whose attempt started before `before` and never settled.
pub fn stuck_processing(conn: &mut PgConnection, before: DateTime<Utc>, limit: i64) -> QueryResult<Vec<i64>> {
    payments::table
        .filter(payments::status.eq(PaymentStatus::Processing))
        .filter(payments::processing_started_at.lt(before))
        .order(payments::processing_started_at)
        .limit(limit)
        .select(payments::id)
        .load(conn)
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

/// A payment still failing when its job is given up on: no more attempts.
pub fn give_up(conn: &mut PgConnection, order_id: i64, reason: &str, now: DateTime<Utc>) -> QueryResult<Option<Payment>> {
    let given_up: Option<Payment> = diesel::update(
        payments::table
            .filter(payments::order_id.eq(order_id))
            .filter(payments::status.eq(PaymentStatus::Failed).or(payments::status.eq(PaymentStatus::Pending))),
    )
    .set((
        payments::status.eq(PaymentStatus::Failed),
        payments::retryable.eq(false),
        payments::error_message.eq(reason),
        payments::updated_at.eq(now),
    ))
    .returning(Payment::as_returning())
    .get_result(conn)
    .optional()?;
    Ok(given_up)
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
