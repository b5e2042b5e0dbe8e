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
use crate::jobs::{self, Backoff, Conn, Job, JobError, JobHandler, NewJob, QueueFull};
use crate::payments::breaker::{Admission, CircuitBreaker};
use crate::payments::fraud::{FraudCheck, OrderFacts, Verdict};
use crate::config::PaymentSettings;
use crate::payments::gateway::PaymentGateway;
use crate::payments::processor::{open_for_order, Claim, Outcome, PaymentOutcomes};
use crate::payments::runtime::Answers;
use crate::payments::{repo as payments, PayOrder, Payment, PaymentError, PaymentProcessor, PaymentStatus};

pub const CHARGE_ORDER: &str = "charge_order";
pub const PAYMENTS_QUEUE: &str = "payments";

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ChargeArgs {
    pub order_id: i64,
    pub user_id: i64,
}

/// Orders follow their payments: paid when the money is taken, failed (their stock given back)
/// when it certainly was not — told by the processor inside the transaction that settles.
pub struct OrderOutcomes;

impl PaymentOutcomes for OrderOutcomes {
    fn paid(&self, conn: &mut PgConnection, payments: &[Payment], now: chrono::DateTime<chrono::Utc>) -> QueryResult<()> {
        let ids: Vec<i64> = payments.iter().map(|p| p.order_id).collect();
        orders::mark_paid(conn, &ids, now).map(drop)
    }

    fn failed(&self, conn: &mut PgConnection, payment: &Payment, now: chrono::DateTime<chrono::Utc>) -> QueryResult<()> {
        orders::close_unpaid(conn, payment.order_id, "failed", now).map(drop)
    }
}

/// The payment processor as the shop uses it: it reports to the orders.
pub fn payment_processor(gateway: Arc<dyn PaymentGateway>, clock: Arc<dyn Clock>, settings: PaymentSettings) -> PaymentProcessor {
    PaymentProcessor::new(gateway, clock, settings).reporting_to(Arc::new(OrderOutcomes))
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
        let (payment, created) = open_for_order(conn, order)?;
        if created {
            jobs::enqueue_bounded(conn, &charge_job(order, limits.charge_attempts), limits.max_ready, now)??;
        }
        Ok(payment)
    })
}

/// A payment asked for through the merchants' API: an order of its own (so the pipeline above
/// charges, retries and reconciles it like any other), its payment and its charge job, created
/// together or not at all — in the caller's transaction, which may record more beside them.
#[allow(clippy::too_many_arguments)]
pub fn start_api_payment(
    conn: &mut PgConnection,
    user_id: i64,
    customer_id: i64,
    money: &crate::payments::Money,
    description: Option<&str>,
    payment_method: Option<&str>,
    limits: QueueLimits,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Payment, StartPaymentError> {
    let order_id = orders::create_for_api(conn, user_id, customer_id, money)?;
    let order = PayOrder { user_id, order_id };
    let (payment, _) = open_for_order(conn, order)?;
    let payment = payments::describe(conn, payment.id, description, payment_method)?;
    jobs::enqueue_bounded(conn, &charge_job(order, limits.charge_attempts), limits.max_ready, now)??;
    Ok(payment)
}

#[derive(Clone)]
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
    matches!(code, Some("gateway_timeout" | "gateway_unavailable" | "gateway_error"))
}

/// What the gateway's answers in one batch say about its health.
#[derive(Default)]
struct Health {
    answered: bool,
    failures: i32,
}

impl Health {
    fn note(&mut self, payment: &Payment) {
        match payment.status {
            PaymentStatus::Completed => self.answered = true,
            PaymentStatus::RequiresConfirmation => self.failures += 1,
            PaymentStatus::Failed if is_gateway_trouble(payment.error_code.as_deref()) => self.failures += 1,
            PaymentStatus::Failed => self.answered = true, // a decline is a healthy answer
            PaymentStatus::Pending | PaymentStatus::Processing => {}
        }
    }
}

impl ChargeOrder {
    /// The job's result, from the state its payment is left in.
    fn result_for(&self, payment: &Payment) -> Result<(), JobError> {
        let message = || payment.error_message.clone().unwrap_or_else(|| "payment failed".into());
        match payment.status {
            PaymentStatus::Completed => Ok(()),
            // The gateway could not say whether it charged: the reconciler asks it again later,
            // and this job's work (attempting the charge) is over.
            PaymentStatus::RequiresConfirmation => Ok(()),
            PaymentStatus::Failed if payment.retryable => Err(JobError::Transient(message())),
            PaymentStatus::Failed => Err(JobError::Permanent(message())),
            PaymentStatus::Pending | PaymentStatus::Processing => Err(JobError::Snooze {
                until: self.clock.now() + ChronoDuration::from_std(self.busy_retry).unwrap_or(ChronoDuration::MAX),
                reason: "another attempt on this payment is in flight".into(),
            }),
        }
    }

    /// Begins the batch: read every order in one query, judge the never-tried ones with the fraud
    /// rules in one pass, ask the breaker once, claim every payment in one transaction
    /// (`prepare`); then send every gateway call at once, holding no connection, and return.
    /// `Charging::finish` settles the answers in one transaction (`finish`).
    fn begin(&self, conn: &mut Conn<'_>, jobs: &[Job], ready: jobs::Ready) -> jobs::Begun {
        let mut results: Vec<Option<Result<(), JobError>>> = vec![None; jobs.len()];
        let mut pending: Vec<(usize, PayOrder)> = Vec::new();
        // Two deliveries of the same order's job in one batch are one piece of work: the second
        // shares the first's result.
        let mut twins: Vec<(usize, usize)> = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            match serde_json::from_value::<ChargeArgs>(job.args.clone()) {
                Ok(args) => match pending.iter().find(|(_, p)| p.order_id == args.order_id) {
                    Some((first, _)) => twins.push((i, *first)),
                    None => pending.push((i, PayOrder { user_id: args.user_id, order_id: args.order_id })),
                },
                Err(e) => results[i] = Some(Err(JobError::Permanent(format!("bad arguments: {e}")))),
            }
        }
        let began = std::time::Instant::now();
        let calls = match conn.run(|conn| self.prepare(conn, pending, &mut results)) {
            Ok(calls) if !calls.is_empty() => calls,
            Ok(_) => return jobs::Begun::Done(every_result(results, &twins, None)),
            Err(shared) => return jobs::Begun::Done(every_result(results, &twins, Some(shared))),
        };
        let answers = self.processor.start_attempts(calls.iter().map(|(_, payment, may)| (payment, *may)), ready);
        jobs::Begun::Waiting(Box::new(Charging {
            handler: self.clone(),
            results,
            twins,
            calls: calls.into_iter().map(|(i, payment, _)| (i, payment)).collect(),
            answers,
            began,
            prepared: began.elapsed(),
        }))
    }

    /// Everything before the gateway: returns the attempts to make, by job index.
    fn prepare(
        &self,
        conn: &mut PgConnection,
        pending: Vec<(usize, PayOrder)>,
        results: &mut [Option<Result<(), JobError>>],
    ) -> Result<Vec<(usize, Payment, bool)>, JobError> {
        let ids: Vec<i64> = pending.iter().map(|(_, p)| p.order_id).collect();
        let found = orders::find_many_with_payment(conn, &ids)?;
        let mut fresh: Vec<(usize, PayOrder, OrderFacts)> = Vec::new();
        let mut ready: Vec<(usize, PayOrder)> = Vec::new();
        for (i, pay) in pending {
            let Some((order, payment_status, attempts)) = found.iter().find(|(o, _, _)| o.id == pay.order_id) else {
                results[i] = Some(Err(JobError::Permanent("the order no longer exists".into())));
                continue;
            };
            if order.status != "pending" {
                results[i] = Some(Ok(())); // paid by an earlier run, or closed: nothing left to do
                continue;
            }
            let never_tried = payment_status.is_none_or(|s| s == PaymentStatus::Pending) && attempts.unwrap_or(0) == 0;
            // The shoppers' fraud rules judge orders from the catalogue; a payment a merchant makes
            // through the API is the merchant's own charge (and 100 a second from one account is
            // their normal, not a velocity alarm).
            if never_tried && order.source == "shop" {
                let facts = OrderFacts { user_id: order.user_id, order_id: order.id, money: order.due() };
                fresh.push((i, pay, facts));
            } else {
                ready.push((i, pay));
            }
        }
        let facts: Vec<OrderFacts> = fresh.iter().map(|(_, _, f)| f.clone()).collect();
        for ((i, pay, _), verdict) in fresh.into_iter().zip(self.fraud.check_many(conn, &facts)?) {
            match verdict {
                Verdict::Allow => ready.push((i, pay)),
                Verdict::Reject(why) => {
                    self.processor.refuse(conn, pay, "fraud_rejected", &why).map_err(payment_error)?;
                    results[i] = Some(Err(JobError::Permanent(format!("fraud check: {why}"))));
                }
            }
        }
        if ready.is_empty() {
            return Ok(Vec::new());
        }

        let now = self.clock.now();
        match self.breaker.admit(conn, now)? {
            Admission::Closed => {}
            Admission::Open { until } => {
                for (i, _) in ready {
                    results[i] = Some(Err(JobError::Snooze { until, reason: "the gateway's circuit breaker is open".into() }));
                }
                return Ok(Vec::new());
            }
            // Half open: one call tests the gateway; the rest wait for its verdict.
            Admission::Probe => {
                let until = now + ChronoDuration::from_std(self.busy_retry).unwrap_or(ChronoDuration::MAX);
                for (i, _) in ready.split_off(1) {
                    results[i] = Some(Err(JobError::Snooze { until, reason: "the circuit breaker is testing the gateway".into() }));
                }
            }
        }

        let orders: Vec<PayOrder> = ready.iter().map(|(_, p)| *p).collect();
        let mut calls: Vec<(usize, Payment, bool)> = Vec::new();
        for ((i, _), claim) in ready.iter().zip(self.processor.claim_many(conn, &orders)?) {
            match claim {
                Ok(Claim::Attempt { payment, may_have_charged }) => calls.push((*i, payment, may_have_charged)),
                Ok(Claim::Nothing(payment)) => results[*i] = Some(self.result_for(&payment)),
                Err(e) => results[*i] = Some(Err(payment_error(e))),
            }
        }
        Ok(calls)
    }

    /// Everything after the gateway: settle these answers (job index, attempt, outcome) in one
    /// transaction, learn the gateway's health from them. Returns each job's result.
    fn finish(&self, conn: &mut PgConnection, answered: Vec<(usize, Payment, Outcome)>) -> Vec<(usize, Result<(), JobError>)> {
        let (jobs, settling): (Vec<usize>, Vec<(Payment, Outcome)>) = answered.into_iter().map(|(i, p, o)| (i, (p, o))).unzip();
        let settled = match self.processor.settle_many(conn, settling) {
            Ok(settled) => settled,
            // The settle rolled back: each attempt stays `processing` until its lease runs out, and
            // the next one looks the charge up before charging.
            Err(e) => {
                let shared = JobError::from(e);
                return jobs.into_iter().map(|i| (i, Err(shared.clone()))).collect();
            }
        };
        let mut health = Health::default();
        let results = jobs
            .into_iter()
            .zip(settled)
            .map(|(i, payment)| {
                (i, match payment {
                    Ok(payment) => {
                        health.note(&payment);
                        self.result_for(&payment)
                    }
                    Err(e) => Err(e.into()),
                })
            })
            .collect();
        let now = self.clock.now();
        let learned = if health.answered {
            self.breaker.record_success(conn, now)
        } else if health.failures > 0 {
            self.breaker.record_failures(conn, now, health.failures)
        } else {
            Ok(())
        };
        if let Err(e) = learned {
            // The payments are settled; the breaker learns from the next answers instead.
            log::warn!("the circuit breaker could not record the gateway's health: {e}");
        }
        results
    }
}

impl JobHandler for ChargeOrder {
    fn kind(&self) -> &'static str {
        CHARGE_ORDER
    }

    fn backoff(&self) -> Backoff {
        self.backoff
    }

    fn perform(&self, conn: &mut PgConnection, job: &Job) -> Result<(), JobError> {
        self.perform_batch(&mut Conn::Held(conn), std::slice::from_ref(job)).remove(0)
    }

    fn perform_batch(&self, conn: &mut Conn<'_>, jobs: &[Job]) -> Vec<Result<(), JobError>> {
        match self.begin(conn, jobs, Box::new(|| {})) {
            jobs::Begun::Done(results) => results,
            jobs::Begun::Waiting(charging) => charging.finish(conn),
        }
    }

    fn begin_batch(&self, conn: &mut Conn<'_>, jobs: &[Job], ready: jobs::Ready) -> jobs::Begun {
        self.begin(conn, jobs, ready)
    }

    fn retry_means(&self) -> &'static str {
        "Tries the charge again under the same key, so the card is never charged twice; refused when the card was declined or the payment already completed."
    }

    /// Retrying helps only while the payment may still go through: not after a decline, a fraud
    /// rejection or a payment that completed.
    fn can_retry(&self, conn: &mut PgConnection, job: &Job) -> QueryResult<Result<(), String>> {
        let Ok(args) = serde_json::from_value::<ChargeArgs>(job.args.clone()) else { return Ok(Ok(())) };
        let Some(payment) = payments::lock_by_order(conn, args.order_id)? else { return Ok(Ok(())) };
        Ok(match payment.status {
            PaymentStatus::Completed => Err("the payment has completed; there is nothing to retry".into()),
            PaymentStatus::Failed if !payment.retryable && !matches!(payment.error_code.as_deref(), Some("gateway_timeout" | "gateway_unavailable" | "gateway_error")) => {
                Err(format!("the payment failed for good ({}); charging again cannot help — the shopper can order again", payment.error_code.as_deref().unwrap_or("declined")))
            }
            _ => Ok(()),
        })
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

/// A batch of charges waiting on the gateway.
struct Charging {
    handler: ChargeOrder,
    /// Results decided before the gateway, by job index.
    results: Vec<Option<Result<(), JobError>>>,
    twins: Vec<(usize, usize)>,
    /// By call: the job's index and the attempt.
    calls: Vec<(usize, Payment)>,
    answers: Answers<Outcome>,
    began: std::time::Instant,
    prepared: Duration,
}

impl jobs::Waiting for Charging {
    fn finish(self: Box<Self>, conn: &mut Conn<'_>) -> Vec<Result<(), JobError>> {
        let Charging { handler, mut results, twins, calls, answers, began, prepared } = *self;
        let outcomes = answers.wait();
        let answered = began.elapsed();
        let indices: Vec<usize> = calls.iter().map(|(i, _)| *i).collect();
        let answered_calls = calls.into_iter().zip(outcomes).map(|((i, payment), outcome)| (i, payment, outcome)).collect();
        let settled = conn.run(|conn| Ok::<_, diesel::result::Error>(handler.finish(conn, answered_calls)));
        let settled = settled.unwrap_or_else(|e| {
            // No connection: the attempts stay `processing` until their lease runs out, and the
            // next attempt looks each charge up before charging.
            let shared = JobError::from(e);
            indices.iter().map(|&i| (i, Err(shared.clone()))).collect()
        });
        for (i, result) in settled {
            results[i] = Some(result);
        }
        // Where a batch's time goes (RUST_LOG=agora::orders::pipeline=debug): what the settling
        // probe in bench/results.md is read with. "Answered" includes any wait for the worker to
        // come back to the batch after its last answer.
        log::debug!(
            "charged {}: prepared in {} ms, answered and taken up {} ms later, settled in {} ms",
            indices.len(),
            prepared.as_millis(),
            (answered - prepared).as_millis(),
            (began.elapsed() - answered).as_millis()
        );
        every_result(results, &twins, None)
    }

    fn unanswered(&self) -> usize {
        self.answers.unanswered()
    }
}

/// Every job's result: twins share their first's, and a failure of the batch as a whole (the
/// database went away) is every unfinished job's.
fn every_result(mut results: Vec<Option<Result<(), JobError>>>, twins: &[(usize, usize)], shared: Option<JobError>) -> Vec<Result<(), JobError>> {
    for &(twin, first) in twins {
        results[twin] = results[first].clone();
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(shared.clone().unwrap_or_else(|| JobError::Transient("not attempted".into())))))
        .collect()
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
