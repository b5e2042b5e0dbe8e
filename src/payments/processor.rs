//! Drives one order's payment through pending → processing → completed | failed, charging it
//! exactly once however often, however concurrently, it is asked to.
//!
//! The work is split into three steps so that no transaction stays open while the gateway is
//! called (a slow gateway must not hold row locks or pool connections hostage):
//! 1. claim — in one transaction: create the payment if it does not exist, lock its row, decide
//!    whether an attempt is due, and mark it `processing` with a fresh fencing token;
//! 2. call the gateway — outside any transaction; if an earlier attempt may have reached the
//!    gateway (it timed out, or its worker vanished mid-call), look the charge up by key first;
//! 3. settle — in one transaction: record the outcome only if this attempt still owns the row,
//!    append the audit event, and move the order along.

use chrono::Duration as ChronoDuration;
use diesel::prelude::*;
use std::sync::Arc;

use super::domain::{IdempotencyKey, PaymentStatus};
use super::gateway::{Charge, ChargeRequest, GatewayError, PaymentGateway};
use super::repo::{self, Failure, Payment};
use super::PaymentError;
use crate::clock::Clock;
use crate::config::PaymentSettings;
use crate::orders::repo as orders;

/// Pay for this order, on behalf of this user.
#[derive(Debug, Clone, Copy)]
pub struct PayOrder {
    pub user_id: i64,
    pub order_id: i64,
}

pub struct PaymentProcessor {
    gateway: Arc<dyn PaymentGateway>,
    clock: Arc<dyn Clock>,
    settings: PaymentSettings,
}

enum Claim {
    /// Nothing to do now: completed, failed for good, or another attempt is under way.
    Nothing(Payment),
    Attempt { payment: Payment, may_have_charged: bool },
}

impl PaymentProcessor {
    pub fn new(gateway: Arc<dyn PaymentGateway>, clock: Arc<dyn Clock>, settings: PaymentSettings) -> Self {
        PaymentProcessor { gateway, clock, settings }
    }

    pub fn process(&self, conn: &mut PgConnection, order: PayOrder) -> Result<Payment, PaymentError> {
        let (payment, may_have_charged) = match conn.transaction(|conn| self.claim(conn, order))? {
            Claim::Nothing(payment) => return Ok(payment),
            Claim::Attempt { payment, may_have_charged } => (payment, may_have_charged),
        };
        let outcome = self.call_gateway(&payment, may_have_charged);
        Ok(conn.transaction(|conn| self.settle(conn, &payment, outcome))?)
    }

    fn claim(&self, conn: &mut PgConnection, order: PayOrder) -> Result<Claim, PaymentError> {
        let (payment, _) = create_for_order(conn, order)?;
        let now = self.clock.now();
        let (may_have_charged, reason) = match payment.status {
            PaymentStatus::Completed => return Ok(Claim::Nothing(payment)),
            PaymentStatus::Failed if !payment.retryable => return Ok(Claim::Nothing(payment)),
            PaymentStatus::Processing if !self.attempt_lost(&payment, now) => return Ok(Claim::Nothing(payment)),
            PaymentStatus::Processing => {
                (true, "the previous attempt stopped answering; recovering it through the gateway".to_string())
            }
            PaymentStatus::Failed => (
                true,
                format!("attempt {} of {} after: {}", payment.retry_count + 1, self.settings.max_retries,
                    payment.error_message.as_deref().unwrap_or("a transient failure")),
            ),
            PaymentStatus::Pending => (false, "charging the card".to_string()),
        };
        let claimed = repo::start_attempt(conn, payment.id, payment.status, &reason, now)?;
        Ok(Claim::Attempt { payment: claimed, may_have_charged })
    }

    /// Whether a `processing` attempt has outlived its lease: its worker is presumed gone.
    fn attempt_lost(&self, payment: &Payment, now: chrono::DateTime<chrono::Utc>) -> bool {
        let lease = ChronoDuration::from_std(self.settings.processing_lease).unwrap_or(ChronoDuration::MAX);
        payment.processing_started_at.is_some_and(|started| started + lease <= now)
    }

    fn call_gateway(&self, payment: &Payment, may_have_charged: bool) -> Result<Charge, GatewayError> {
        if may_have_charged {
            if let Some(charge) = self.gateway.lookup(&payment.idempotency_key)? {
                return Ok(charge);
            }
        }
        self.gateway.charge(&ChargeRequest {
            idempotency_key: &payment.idempotency_key,
            amount: &payment.amount,
            currency: &payment.currency,
        })
    }

    fn settle(
        &self,
        conn: &mut PgConnection,
        attempt: &Payment,
        outcome: Result<Charge, GatewayError>,
    ) -> QueryResult<Payment> {
        let now = self.clock.now();
        let error = match outcome {
            Ok(charge) => {
                return match repo::complete_attempt(conn, attempt.id, attempt.attempts, &charge.id, now)? {
                    Some(completed) => Ok(completed),
                    None => self.lost_claim(conn, attempt),
                };
            }
            Err(error) => error,
        };
        let transient = error.is_transient();
        let retries_left = attempt.retry_count + 1 < self.settings.max_retries;
        let message = if transient && !retries_left {
            format!("{error} (gave up after {} attempts)", self.settings.max_retries)
        } else {
            error.to_string()
        };
        let failure = Failure { code: error.code(), message: &message, retryable: transient && retries_left, counts_as_retry: transient };
        let Some(failed) = repo::fail_attempt(conn, attempt.id, attempt.attempts, &failure, now)? else {
            return self.lost_claim(conn, attempt);
        };
        repo::record_event(conn, failed.id, Some(PaymentStatus::Processing), PaymentStatus::Failed, &message)?;
        if !failure.retryable {
            orders::close_unpaid(conn, failed.order_id, "failed", now)?;
        }
        Ok(failed)
    }

    /// A later attempt took the payment over after this one's lease ran out; that attempt
    /// recovers whatever this one did through the gateway's lookup.
    fn lost_claim(&self, conn: &mut PgConnection, attempt: &Payment) -> QueryResult<Payment> {
        log::warn!("payment {} attempt {} lost its claim before settling", attempt.reference, attempt.attempts);
        repo::reload(conn, attempt.id)
    }

    /// Fails a payment that never reached the gateway (a fraud rule said no); it will not be retried.
    pub fn refuse(&self, conn: &mut PgConnection, order: PayOrder, code: &str, message: &str) -> Result<Payment, PaymentError> {
        conn.transaction(|conn| {
            let (payment, _) = create_for_order(conn, order)?;
            if payment.status != PaymentStatus::Pending {
                return Ok(payment);
            }
            let now = self.clock.now();
            let refused = repo::refuse_pending(conn, payment.id, code, message, now)?;
            repo::record_event(conn, payment.id, Some(PaymentStatus::Pending), PaymentStatus::Failed, message)?;
            orders::close_unpaid(conn, payment.order_id, "failed", now)?;
            Ok(refused)
        })
    }

    /// Settles a payment left `processing` by an attempt that vanished, from the gateway's record
    /// alone: a charge found by its key completes it; none found leaves it failed and retryable.
    /// It never charges.
    pub fn reconcile(&self, conn: &mut PgConnection, payment_id: i64) -> Result<Payment, PaymentError> {
        let now = self.clock.now();
        let claimed = conn.transaction(|conn| {
            let payment = repo::lock_by_id(conn, payment_id)?.ok_or(PaymentError::PaymentNotFound)?;
            if payment.status != PaymentStatus::Processing || !self.attempt_lost(&payment, now) {
                return Ok::<_, PaymentError>(Err(payment));
            }
            let claimed = repo::start_attempt(conn, payment.id, PaymentStatus::Processing,
                "stuck in processing; reconciling with the gateway", now)?;
            Ok(Ok(claimed))
        })?;
        let attempt = match claimed {
            Ok(attempt) => attempt,
            Err(untouched) => return Ok(untouched),
        };
        let outcome = match self.gateway.lookup(&attempt.idempotency_key) {
            Ok(Some(charge)) => Ok(charge),
            Ok(None) => Err(GatewayError::Unavailable("the attempt was lost before the gateway charged".into())),
            Err(e) => Err(e),
        };
        Ok(conn.transaction(|conn| self.settle(conn, &attempt, outcome))?)
    }
}

/// Finds or creates the order's payment and locks it, in the caller's transaction. `true` when it
/// was created by this call. The amount is the order's; the order must be the user's and unpaid.
pub fn create_for_order(conn: &mut PgConnection, order: PayOrder) -> Result<(Payment, bool), PaymentError> {
    let key = IdempotencyKey::for_order(order.user_id, order.order_id);
    // Usually the payment exists (a job, a second click): lock it. Otherwise insert-if-absent —
    // one statement that concurrent callers cannot both win — and lock what is there then.
    if let Some(payment) = repo::lock_by_key(conn, &key)? {
        return Ok((payment, false));
    }
    let created = repo::insert_for_order(conn, order.user_id, order.order_id, &key)? == 1;
    let payment = repo::lock_by_key(conn, &key)?.ok_or(PaymentError::OrderNotFound)?;
    Ok((payment, created))
}
