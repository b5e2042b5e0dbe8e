//! Group-commit statements (`db::group_commit`): many payments started in one statement, each
//! with the same rows the single path writes — its order where the API makes one, the payment
//! with its first event, and its charge job. What the single path derives (idempotency and
//! gateway keys, the first event's reason, the charge job) comes from the same functions here.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{Array, BigInt, Integer, Jsonb, Nullable, Numeric, SmallInt, Text, Timestamptz, Uuid as SqlUuid};
use std::collections::HashMap;

use super::pipeline::charge_job;
use super::repo as orders;
use crate::jobs::NewJob;
use crate::payments::{repo as payments, IdempotencyKey, PayOrder, Payment};
use crate::schema::payments as payment_rows;

/// A payment asked for through the merchants' API, everything about it decided before it is
/// written (its reference and timestamp are in the answer the caller already holds).
#[derive(Debug, Clone)]
pub struct ApiPaymentStart {
    pub user_id: i64,
    pub customer_id: i64,
    pub money: crate::payments::Money,
    pub description: Option<String>,
    pub payment_method: Option<String>,
    pub reference: uuid::Uuid,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// `start_api_payment` for a batch, in one statement in the caller's transaction (the API's group
/// commit): for each payment its order, the payment with its first event, and its charge job.
/// What the single path derives — the order's id, the payment's idempotency and gateway keys, the
/// first event's reason, the charge job — comes from the same functions here, so the two paths
/// write the same rows. Whether the queue has room is the caller's (approximate) question, asked
/// before.
pub fn start_api_payments(conn: &mut PgConnection, batch: &[ApiPaymentStart], charge_attempts: i32) -> QueryResult<()> {

    if batch.is_empty() {
        return Ok(());
    }
    let order_ids = orders::reserve_ids(conn, batch.len())?;
    let orders_of: Vec<PayOrder> = batch.iter().zip(&order_ids).map(|(p, &order_id)| PayOrder { user_id: p.user_id, order_id }).collect();
    let jobs: Vec<NewJob> = orders_of.iter().map(|o| charge_job(*o, charge_attempts)).collect();
    let text = |f: &dyn Fn(&ApiPaymentStart) -> String| batch.iter().map(f).collect::<Vec<String>>();
    let query = diesel::sql_query(
        "WITH input AS ( \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::numeric[], $5::text[], $6::timestamptz[], $7::uuid[], \
                 $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::jsonb[], $16::smallint[], \
                 $17::integer[], $18::text[]) \
                 AS i(order_id, user_id, customer_id, amount, currency, at, reference, payment_key, gateway_key, description, \
                     payment_method, reason, queue, kind, args, priority, max_attempts, unique_key)), \
         o AS ( \
             INSERT INTO orders (id, user_id, customer_id, total, currency, source, created_at, updated_at) \
             SELECT order_id, user_id, customer_id, amount, currency, 'api', at, at FROM input), \
         p AS ( \
             INSERT INTO payments (user_id, order_id, customer_id, amount, currency, idempotency_key, reference, gateway_key, \
                 description, payment_method, created_at, updated_at) \
             SELECT user_id, order_id, customer_id, amount, currency, payment_key, reference, gateway_key, description, \
                 payment_method, at, at FROM input \
             RETURNING id, order_id), \
         e AS ( \
             INSERT INTO payment_events (payment_id, to_status, reason, created_at) \
             SELECT p.id, 'pending', input.reason, input.at FROM p JOIN input USING (order_id)) \
         INSERT INTO jobs (queue, kind, args, priority, max_attempts, run_at, unique_key) \
         SELECT queue, kind, args, priority, max_attempts, at, unique_key FROM input",
    )
    .into_boxed::<Pg>()
    .bind::<Array<BigInt>, _>(&order_ids)
    .bind::<Array<BigInt>, _>(batch.iter().map(|p| p.user_id).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(batch.iter().map(|p| p.customer_id).collect::<Vec<_>>())
    .bind::<Array<Numeric>, _>(batch.iter().map(|p| p.money.amount().clone()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(text(&|p| p.money.currency().to_string()))
    .bind::<Array<Timestamptz>, _>(batch.iter().map(|p| p.created_at).collect::<Vec<_>>())
    .bind::<Array<SqlUuid>, _>(batch.iter().map(|p| p.reference).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(orders_of.iter().map(|o| IdempotencyKey::for_order(o.user_id, o.order_id).as_str().to_string()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(text(&|p| crate::payments::domain::gateway_key(p.reference)))
    .bind::<Array<Nullable<Text>>, _>(batch.iter().map(|p| p.description.clone()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(batch.iter().map(|p| p.payment_method.clone()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(order_ids.iter().map(|&id| payments::created_reason(id)).collect::<Vec<_>>());
    bind_jobs(query, &jobs).execute(conn).map(drop)
}

/// Binds the charge jobs' columns, in the order both statements name them: queue, kind, args,
/// priority, max_attempts, unique_key.
fn bind_jobs<'a>(query: BoxedSqlQuery<'a, Pg, SqlQuery>, jobs: &[NewJob]) -> BoxedSqlQuery<'a, Pg, SqlQuery> {
    let text = |f: &dyn Fn(&NewJob) -> String| jobs.iter().map(f).collect::<Vec<String>>();
    query
        .bind::<Array<Text>, _>(text(&|j| j.queue.clone()))
        .bind::<Array<Text>, _>(text(&|j| j.kind.clone()))
        .bind::<Array<Jsonb>, _>(jobs.iter().map(|j| j.args.clone()).collect::<Vec<_>>())
        .bind::<Array<SmallInt>, _>(jobs.iter().map(|j| j.priority).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(jobs.iter().map(|j| j.max_attempts).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(jobs.iter().map(|j| j.unique_key.clone()).collect::<Vec<_>>())
}

/// What a batch of Pays made of one order.
#[derive(Debug, Clone)]
pub enum PayStarted {
    /// Its payment: made now, or the one it already had (Pay pressed again).
    Payment(Payment),
    /// Not this person's order, or no longer payable, and no payment of its own.
    NotPayable,
}

/// `pipeline::start_payment` for a batch of distinct orders, in the caller's transaction: one
/// statement locks each payable order (`FOR KEY SHARE`, as the single path does), makes its
/// payment (one per order: the idempotency key's unique index), the payment's first event and its
/// charge job; a second finds the payments orders already had. Whether the queue has room is the
/// caller's (approximate) question, asked before. One answer per order, in order.
pub fn start_payments(conn: &mut PgConnection, batch: &[PayOrder], charge_attempts: i32, now: chrono::DateTime<chrono::Utc>) -> QueryResult<Vec<PayStarted>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = batch.iter().map(|o| IdempotencyKey::for_order(o.user_id, o.order_id).as_str().to_string()).collect();
    let references: Vec<uuid::Uuid> = batch.iter().map(|_| uuid::Uuid::new_v4()).collect();
    let jobs: Vec<NewJob> = batch.iter().map(|o| charge_job(*o, charge_attempts)).collect();
    let query = diesel::sql_query(
        "WITH input AS ( \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], \
                 $9::jsonb[], $10::smallint[], $11::integer[], $12::text[]) \
                 AS i(order_id, user_id, payment_key, reference, gateway_key, reason, queue, kind, args, priority, max_attempts, unique_key)), \
         payable AS ( \
             SELECT o.user_id, o.id, o.customer_id, o.total, o.currency FROM orders o JOIN input i ON i.order_id = o.id AND i.user_id = o.user_id \
             WHERE o.status = 'pending' FOR KEY SHARE OF o), \
         created AS ( \
             INSERT INTO payments (user_id, order_id, customer_id, amount, currency, idempotency_key, reference, gateway_key) \
             SELECT p.user_id, p.id, p.customer_id, p.total, p.currency, i.payment_key, i.reference, i.gateway_key \
             FROM payable p JOIN input i ON i.order_id = p.id \
             ON CONFLICT DO NOTHING \
             RETURNING *), \
         logged AS ( \
             INSERT INTO payment_events (payment_id, to_status, reason) \
             SELECT c.id, 'pending', i.reason FROM created c JOIN input i ON i.order_id = c.order_id), \
         queued AS ( \
             INSERT INTO jobs (queue, kind, args, priority, max_attempts, run_at, unique_key) \
             SELECT i.queue, i.kind, i.args, i.priority, i.max_attempts, $13, i.unique_key FROM created c JOIN input i ON i.order_id = c.order_id \
             ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running') DO NOTHING) \
         SELECT * FROM created",
    )
    .into_boxed::<Pg>()
    .bind::<Array<BigInt>, _>(batch.iter().map(|o| o.order_id).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(batch.iter().map(|o| o.user_id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(&keys)
    .bind::<Array<SqlUuid>, _>(&references)
    .bind::<Array<Text>, _>(references.iter().map(|r| crate::payments::domain::gateway_key(*r)).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(batch.iter().map(|o| payments::created_reason(o.order_id)).collect::<Vec<_>>());
    let created: Vec<Payment> = bind_jobs(query, &jobs).bind::<Timestamptz, _>(now).load(conn)?;
    let mut by_order: HashMap<i64, Payment> = created.into_iter().map(|p| (p.order_id, p)).collect();
    let missing: Vec<&String> = batch.iter().zip(&keys).filter(|(o, _)| !by_order.contains_key(&o.order_id)).map(|(_, k)| k).collect();
    if !missing.is_empty() {
        let existing: Vec<Payment> = payment_rows::table.filter(payment_rows::idempotency_key.eq_any(missing)).select(Payment::as_select()).load(conn)?;
        by_order.extend(existing.into_iter().map(|p| (p.order_id, p)));
    }
    Ok(batch.iter().map(|o| by_order.get(&o.order_id).cloned().map_or(PayStarted::NotPayable, PayStarted::Payment)).collect())
}
