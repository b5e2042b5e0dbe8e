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

    pub fn gateway(&self) -> &Arc<dyn PaymentGateway> {
        &self.gateway
    }

    pub fn process(&self, conn: &mut PgConnection, order: PayOrder) -> Result<Payment, PaymentError> {
        let key = IdempotencyKey::for_order(order.user_id, order.order_id);
        let (payment, may_have_charged) = match conn.transaction(|conn| self.claim(conn, order, &key))? {
            Claim::Nothing(payment) => return Ok(payment),
            Claim::Attempt { payment, may_have_charged } => (payment, may_have_charged),
        };
        let outcome = self.call_gateway(&payment, may_have_charged);
        Ok(conn.transaction(|conn| self.settle(conn, &payment, outcome))?)
    }

    fn claim(&self, conn: &mut PgConnection, order: PayOrder, key: &IdempotencyKey) -> Result<Claim, PaymentError> {
        let created = repo::insert_for_order(conn, order.user_id, order.order_id, key)? == 1;
        let payment = repo::lock_by_key(conn, key)?.ok_or(PaymentError::OrderNotFound)?;
        if created {
            let reason = format!("created for order #{}", order.order_id);
            repo::record_event(conn, payment.id, None, PaymentStatus::Pending, &reason)?;
        }
        let now = self.clock.now();
        let (may_have_charged, reason) = match payment.status {
            PaymentStatus::Completed => return Ok(Claim::Nothing(payment)),
            PaymentStatus::Failed if !payment.retryable => return Ok(Claim::Nothing(payment)),
            PaymentStatus::Processing => {
                let lease = ChronoDuration::from_std(self.settings.processing_lease).unwrap_or(ChronoDuration::MAX);
                let started = payment.processing_started_at.unwrap_or(now);
                if now < started + lease {
                    return Ok(Claim::Nothing(payment));
                }
                (true, "the previous attempt stopped answering; recovering it through the gateway".to_string())
            }
            PaymentStatus::Failed => (
                true,
                format!("attempt {} of {} after: {}", payment.retry_count + 1, self.settings.max_retries,
                    payment.error_message.as_deref().unwrap_or("a transient failure")),
            ),
            PaymentStatus::Pending => (false, "charging the card".to_string()),
        };
        let claimed = repo::start_attempt(conn, payment.id, now)?;
        repo::record_event(conn, payment.id, Some(payment.status), PaymentStatus::Processing, &reason)?;
        Ok(Claim::Attempt { payment: claimed, may_have_charged })
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
        let (settled, reason, order_status) = match outcome {
            Ok(charge) => {
                let settled = repo::complete_attempt(conn, attempt.id, attempt.attempts, &charge.id, now)?;
                (settled, format!("charged, gateway transaction {}", charge.id), Some("paid"))
            }
            Err(error) => {
                let transient = error.is_transient();
                let retries_left = attempt.retry_count + 1 < self.settings.max_retries;
                let message = if transient && !retries_left {
                    format!("{error} (gave up after {} attempts)", self.settings.max_retries)
                } else {
                    error.to_string()
                };
                let failure = Failure {
                    code: error.code(),
                    message: &message,
                    retryable: transient && retries_left,
                    counts_as_retry: transient,
                };
                let settled = repo::fail_attempt(conn, attempt.id, attempt.attempts, &failure, now)?;
                let order_status = (!failure.retryable).then_some("failed");
                (settled, message, order_status)
            }
        };
        let Some(settled) = settled else {
            // A later attempt took the payment over after this one's lease ran out; that attempt
            // recovers whatever this one did through the gateway's lookup.
            log::warn!("payment {} attempt {} lost its claim before settling", attempt.reference, attempt.attempts);
            return repo::reload(conn, attempt.id);
        };
        repo::record_event(conn, settled.id, Some(PaymentStatus::Processing), settled.status, &reason)?;
        if let Some(status) = order_status {
            repo::set_order_status(conn, settled.order_id, status, now)?;
        }
        Ok(settled)
    }
}
