//! Group commit for the browser's Pay (`db::group_commit`): each Pay hands its order to a few
//! writer threads, which start a whole batch of payments in one statement and one commit
//! (`batches::start_payments`). Every guarantee of the single path holds: the order is locked
//! `FOR KEY SHARE`, an order has one payment whoever presses Pay how often, the queue is bounded
//! (approximately: `ReadyEstimate`, as the API's intake) with 503 and `Retry-After` when full, and
//! nothing is half-made — a Pay is answered only after the commit that holds its rows, and a batch
//! that cannot be written is tried request by request on the single path.

use std::collections::HashMap;
use std::sync::Arc;

use diesel::Connection;

use super::batches::{start_payments, PayStarted};
use super::pipeline::{self, QueueLimits, StartPaymentError};
use crate::clock::Clock;
use crate::db::group_commit::{GroupCommit, Shape};
use crate::db::PgPool;
use crate::jobs::queue::Admission;
use crate::jobs::{QueueFull, ReadyEstimate};
use crate::payments::{PayOrder, Payment, PaymentError};
use crate::web::Db;

const SHAPE: Shape = Shape { name: "pay-intake", threads: 2, max_batch: 128, backlog: 4_096 };

#[derive(Debug, Clone)]
enum Written {
    Started(PayStarted),
    QueueFull,
    /// Not written (no connection, the batch failed, the backlog was full): the single path.
    Retry,
}

pub struct PayIntake {
    writers: GroupCommit<PayOrder, Written>,
    limits: QueueLimits,
    clock: Arc<dyn Clock>,
}

impl PayIntake {
    pub fn start(pool: PgPool, limits: QueueLimits, clock: Arc<dyn Clock>) -> PayIntake {
        let ready = ReadyEstimate::new(pipeline::PAYMENTS_QUEUE, limits.max_ready, std::time::Duration::from_millis(100));
        let writer_clock = clock.clone();
        let writers = GroupCommit::start(SHAPE, move |batch| write(&pool, &ready, limits.charge_attempts, &*writer_clock, batch));
        PayIntake { writers, limits, clock }
    }

    /// What Pay does (`pipeline::start_payment`), in a shared commit: the order's payment, made
    /// now with its charge job or found from an earlier press.
    pub async fn pay(&self, db: &Db, order: PayOrder) -> Result<Result<Payment, StartPaymentError>, crate::web::AppError> {
        Ok(match self.writers.submit(order).await.unwrap_or(Written::Retry) {
            Written::Started(PayStarted::Payment(payment)) => Ok(payment),
            Written::Started(PayStarted::NotPayable) => Err(StartPaymentError::Payment(PaymentError::OrderNotFound)),
            Written::QueueFull => Err(StartPaymentError::Full(QueueFull { limit: self.limits.max_ready })),
            Written::Retry => {
                let (limits, now) = (self.limits, self.clock.now());
                db.run(move |conn| Ok::<_, crate::web::AppError>(pipeline::start_payment(conn, order, limits, now))).await?
            }
        })
    }
}

fn write(pool: &PgPool, ready: &ReadyEstimate, charge_attempts: i32, clock: &dyn Clock, batch: &[PayOrder]) -> Vec<Written> {
    let every = |written: Written| vec![written; batch.len()];
    let mut conn = match ready.admit_from(pool, batch.len(), "pay intake") {
        Admission::Admitted(conn) => conn,
        Admission::Full => return every(Written::QueueFull),
        Admission::Unavailable => return every(Written::Retry),
    };
    // Pay pressed twice at once: one order, one row in the statement, one answer for both.
    let mut place: HashMap<(i64, i64), usize> = HashMap::with_capacity(batch.len());
    let mut distinct: Vec<PayOrder> = Vec::with_capacity(batch.len());
    let places: Vec<usize> = batch
        .iter()
        .map(|order| {
            *place.entry((order.user_id, order.order_id)).or_insert_with(|| {
                distinct.push(*order);
                distinct.len() - 1
            })
        })
        .collect();
    let now = clock.now();
    match conn.transaction(|conn| start_payments(conn, &distinct, charge_attempts, now)) {
        Ok(started) => places.into_iter().map(|at| Written::Started(started[at].clone())).collect(),
        Err(e) => {
            log::warn!("pay intake: a batch of {} could not be written, each is tried alone: {e}", batch.len());
            every(Written::Retry)
        }
    }
}
