//! The merchants' background work: refunds through the gateway, the nightly invariant check, and
//! forgetting idempotency keys after a day.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::repo;
use crate::clock::Clock;
use crate::jobs::{Backoff, Job, JobError, JobHandler, NewJob};
use crate::payments::refunds;
use crate::payments::PaymentProcessor;

pub const REFUND_PAYMENT: &str = "refund_payment";
pub const CHECK_INVARIANTS: &str = "check_invariants";
pub const PRUNE_API_KEYS: &str = "prune_api_keys";

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RefundArgs {
    pub refund_id: i64,
}

pub fn refund_job(refund_id: i64, max_attempts: i32) -> NewJob {
    NewJob::new(REFUND_PAYMENT, serde_json::json!(RefundArgs { refund_id }))
        .queue(crate::orders::pipeline::PAYMENTS_QUEUE)
        .max_attempts(max_attempts)
        .unique(format!("{REFUND_PAYMENT}:{refund_id}"))
}

/// Sends one refund to the gateway. A refund left pending (no answer that settles it) is tried
/// again with backoff, looking it up first; one whose job dies stays pending, visibly, for an
/// operator to replay under the same key or settle by hand.
pub struct RefundPayment {
    pub processor: Arc<PaymentProcessor>,
    pub backoff: Backoff,
}

impl JobHandler for RefundPayment {
    fn kind(&self) -> &'static str {
        REFUND_PAYMENT
    }

    fn backoff(&self) -> Backoff {
        self.backoff
    }

    fn perform(&self, conn: &mut PgConnection, job: &Job) -> Result<(), JobError> {
        let args: RefundArgs = serde_json::from_value(job.args.clone()).map_err(|e| JobError::Permanent(format!("bad arguments: {e}")))?;
        match self.processor.process_refund(conn, args.refund_id)? {
            None => Err(JobError::Permanent("the refund no longer exists".into())),
            Some(refund) if refund.status == refunds::PENDING => {
                Err(JobError::Transient(refund.failure_message.unwrap_or_else(|| "no answer from the gateway".into())))
            }
            Some(_) => Ok(()),
        }
    }
}

/// Checks the money invariants and records the result the dashboard shows.
pub struct CheckInvariants;

impl JobHandler for CheckInvariants {
    fn kind(&self) -> &'static str {
        CHECK_INVARIANTS
    }

    fn perform(&self, conn: &mut PgConnection, _: &Job) -> Result<(), JobError> {
        repo::run_and_record(conn)?;
        Ok(())
    }
}

/// Idempotency keys are kept for 24 hours, as Stripe keeps them.
pub struct PruneApiKeys {
    pub clock: Arc<dyn Clock>,
}

impl JobHandler for PruneApiKeys {
    fn kind(&self) -> &'static str {
        PRUNE_API_KEYS
    }

    fn perform(&self, conn: &mut PgConnection, _: &Job) -> Result<(), JobError> {
        repo::prune_keys(conn, self.clock.now() - chrono::Duration::hours(24))?;
        Ok(())
    }
}
