//! The order pipeline on the job layer: Pay enqueues a charge job in the same transaction as the
//! payment; a worker runs the fraud check, then the charge (through the circuit breaker), then the
//! order is paid. Periodic jobs expire abandoned orders and reconcile stuck payments.

use chrono::Duration as ChronoDuration;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

use super::repo as orders;
use crate::clock::Clock;
use crate::jobs::{self, Backoff, Job, JobError, JobHandler, NewJob, QueueFull};
use crate::payments::breaker::{Admission, CircuitBreaker};
use crate::payments::fraud::{FraudCheck, OrderFacts, Verdict};
use crate::payments::processor::create_for_order;
use crate::payments::{repo as payments, PayOrder, Payment, PaymentError, PaymentProcessor, PaymentStatus};

pub const CHARGE_ORDER: &str = "charge_order";
pub const PAYMENTS_QUEUE: &str = "payments";

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ChargeArgs {
    pub order_id: i64,
    pub user_id: i64,
}

pub fn charge_job(order: PayOrder, max_attempts: i32) -> NewJob {
    NewJob::new(CHARGE_ORDER, serde_json::json!(ChargeArgs { order_id: order.order_id, user_id: order.user_id }))
        .queue(PAYMENTS_QUEUE)
        .max_attempts(max_attempts)
        .unique(format!("{CHARGE_ORDER}:{}", order.order_id))
}

#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Ready jobs the payments queue may hold before checkout answers 503.
    pub max_ready: i64,
    /// A charge job gets as many attempts as its payment gets gateway attempts.
    pub charge_attempts: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum StartPaymentError {
    #[error(transparent)]
    Payment(#[from] PaymentError),
    #[error(transparent)]
    Full(#[from] QueueFull),
}

impl From<diesel::result::Error> for StartPaymentError {
    fn from(e: diesel::result::Error) -> Self {
        StartPaymentError::Payment(e.into())
    }
}

/// What Pay does: the payment and its charge job, created together or not at all. Pressing Pay
/// again finds the same payment and enqueues nothing.
pub fn start_payment(
    conn: &mut PgConnection,
    order: PayOrder,
    limits: QueueLimits,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Payment, StartPaymentError> {
    conn.transaction(|conn| {
        let (payment, created) = create_for_order(conn, order)?;
        if created {
            jobs::enqueue_bounded(conn, &charge_job(order, limits.charge_attempts), limits.max_ready, now)??;
        }
        Ok(payment)
    })
}

pub struct ChargeOrder {
    pub processor: Arc<PaymentProcessor>,
    pub fraud: Arc<dyn FraudCheck>,
    pub breaker: CircuitBreaker,
    pub clock: Arc<dyn Clock>,
    pub backoff: Backoff,
    /// How long to wait for another live attempt on the same payment before looking again.
    pub busy_retry: Duration,
}

fn is_gateway_trouble(code: Option<&str>) -> bool {
    matches!(code, Some("gateway_timeout" | "gateway_unavailable"))
}

impl JobHandler for ChargeOrder {
    fn kind(&self) -> &'static str {
        CHARGE_ORDER
    }

    fn backoff(&self) -> Backoff {
        self.backoff
    }

    fn perform(&self, conn: &mut PgConnection, job: &Job) -> Result<(), JobError> {
        let args: ChargeArgs =
            serde_json::from_value(job.args.clone()).map_err(|e| JobError::Permanent(format!("bad arguments: {e}")))?;
        let pay = PayOrder { user_id: args.user_id, order_id: args.order_id };
        let (order, payment_status, attempts) = orders::find_with_payment(conn, args.order_id)?
            .ok_or_else(|| JobError::Permanent("the order no longer exists".into()))?;
        if order.status != "pending" {
            return Ok(()); // paid by an earlier run, or closed: nothing left to do
        }
        let never_tried = payment_status.is_none_or(|s| s == PaymentStatus::Pending) && attempts.unwrap_or(0) == 0;
        if never_tried {
            let facts = OrderFacts { user_id: order.user_id, order_id: order.id, amount: order.total.clone(), currency: order.currency.clone() };
            if let Verdict::Reject(why) = self.fraud.check(conn, &facts)? {
                self.processor.refuse(conn, pay, "fraud_rejected", &why).map_err(payment_error)?;
                return Err(JobError::Permanent(format!("fraud check: {why}")));
            }
        }
        let now = self.clock.now();
        if let Admission::Open { until } = self.breaker.admit(conn, now)? {
            return Err(JobError::Snooze { until, reason: "the gateway's circuit breaker is open".into() });
        }
        let payment = self.processor.process(conn, pay).map_err(payment_error)?;
        let now = self.clock.now();
        let message = || payment.error_message.clone().unwrap_or_else(|| "payment failed".into());
        match payment.status {
            PaymentStatus::Completed => {
                self.breaker.record_success(conn, now)?;
                Ok(())
            }
            PaymentStatus::Failed if payment.retryable => {
                self.breaker.record_failure(conn, now)?;
                Err(JobError::Transient(message()))
            }
            PaymentStatus::Failed => {
                if is_gateway_trouble(payment.error_code.as_deref()) {
                    self.breaker.record_failure(conn, now)?;
                } else {
                    self.breaker.record_success(conn, now)?;
                }
                Err(JobError::Permanent(message()))
            }
            // The gateway could not say whether it charged: the reconciler asks it again later,
            // and this job's work (attempting the charge) is over.
            PaymentStatus::RequiresConfirmation => {
                self.breaker.record_failure(conn, now)?;
                Ok(())
            }
            PaymentStatus::Pending | PaymentStatus::Processing => Err(JobError::Snooze {
                until: now + ChronoDuration::from_std(self.busy_retry).unwrap_or(ChronoDuration::MAX),
                reason: "another attempt on this payment is in flight".into(),
            }),
        }
    }

    /// The job is out of attempts. In the transaction that buries it, with the order's row locked
    /// (so no claim slips in between the look and the close): the order fails and its stock comes
    /// back only if its payment certainly took no money. A payment in flight, lost, or whose last
    /// attempt had no answer keeps its order open for the attempt or the reconciler to settle.
    fn on_dead(&self, conn: &mut PgConnection, job: &Job) -> QueryResult<()> {
        let Ok(args) = serde_json::from_value::<ChargeArgs>(job.args.clone()) else { return Ok(()) };
        if !orders::lock_pending(conn, args.order_id)? {
            return Ok(());
        }
        let reason = format!("gave up after {} job attempts", job.attempt);
        if self.processor.give_up(conn, args.order_id, &reason)? {
            orders::close_unpaid(conn, args.order_id, "failed", self.clock.now())?;
        }
        Ok(())
    }
}

fn payment_error(e: PaymentError) -> JobError {
    match e {
        PaymentError::OrderNotFound | PaymentError::PaymentNotFound => JobError::Permanent(e.to_string()),
        PaymentError::Database(e) => e.into(),
    }
}

pub const EXPIRE_ORDERS: &str = "expire_orders";

/// Unpaid orders on which paying never began give their stock back after `ttl`.
pub struct ExpireOrders {
    pub clock: Arc<dyn Clock>,
    pub ttl: Duration,
}

impl JobHandler for ExpireOrders {
    fn kind(&self) -> &'static str {
        EXPIRE_ORDERS
    }

    fn perform(&self, conn: &mut PgConnection, _: &Job) -> Result<(), JobError> {
        let now = self.clock.now();
        let before = now - ChronoDuration::from_std(self.ttl).unwrap_or(ChronoDuration::MAX);
        for order_id in orders::abandoned(conn, before, 500)? {
            conn.transaction(|conn| orders::expire_if_abandoned(conn, order_id, now))?;
        }
        Ok(())
    }
}

pub const RECONCILE_PAYMENTS: &str = "reconcile_payments";

/// Asks the gateway about every payment whose outcome is open: stuck in `processing` (its worker
/// vanished) or awaiting confirmation and due. Charged ones complete; those the gateway never
/// charged get a charge job again while attempts remain; the rest are asked again later, with
/// growing pauses. It never charges.
pub struct ReconcilePayments {
    pub processor: Arc<PaymentProcessor>,
    pub clock: Arc<dyn Clock>,
    pub older_than: Duration,
}

impl ReconcilePayments {
    fn confirm(&self, conn: &mut PgConnection, payment_id: i64, now_please: bool) -> Result<(), JobError> {
        let payment = self.processor.confirm(conn, payment_id, now_please).map_err(payment_error)?;
        if payment.status == PaymentStatus::Failed && payment.retryable {
            let pay = PayOrder { user_id: payment.user_id, order_id: payment.order_id };
            jobs::enqueue(conn, &charge_job(pay, self.processor.settings().max_attempts), self.clock.now())?;
        }
        Ok(())
    }
}

impl JobHandler for ReconcilePayments {
    fn kind(&self) -> &'static str {
        RECONCILE_PAYMENTS
    }

    fn perform(&self, conn: &mut PgConnection, _: &Job) -> Result<(), JobError> {
        let now = self.clock.now();
        let lost_before = now - ChronoDuration::from_std(self.older_than).unwrap_or(ChronoDuration::MAX);
        for payment_id in payments::due_for_check(conn, lost_before, now, 100)? {
            self.confirm(conn, payment_id, false)?;
        }
        Ok(())
    }
}

pub const CONFIRM_PAYMENT: &str = "confirm_payment";

/// One payment awaiting confirmation, looked up now (an administrator's "Check now").
pub struct ConfirmPayment(pub ReconcilePayments);

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ConfirmArgs {
    pub payment_id: i64,
}

pub fn confirm_job(payment_id: i64) -> NewJob {
    NewJob::new(CONFIRM_PAYMENT, serde_json::json!(ConfirmArgs { payment_id })).unique(format!("{CONFIRM_PAYMENT}:{payment_id}"))
}

impl JobHandler for ConfirmPayment {
    fn kind(&self) -> &'static str {
        CONFIRM_PAYMENT
    }

    fn perform(&self, conn: &mut PgConnection, job: &Job) -> Result<(), JobError> {
        let args: ConfirmArgs =
            serde_json::from_value(job.args.clone()).map_err(|e| JobError::Permanent(format!("bad arguments: {e}")))?;
        self.0.confirm(conn, args.payment_id, true)
    }
}
