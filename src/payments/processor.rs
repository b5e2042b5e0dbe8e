//! Drives one order's payment through pending → processing → completed | failed, charging it
//! exactly once however often, however concurrently, it is asked to — and never reporting a
//! failure while money may have been taken.
//!
//! The work is split into three steps so that no transaction stays open while the gateway is
//! called (a slow gateway must not hold row locks or pool connections hostage):
//! 1. claim — in one transaction: create the payment if it does not exist, lock its row, decide
//!    whether an attempt is due, and mark it `processing` with a fresh fencing token;
//! 2. call the gateway — outside any transaction; if an earlier attempt may have reached the
//!    gateway (it timed out, or its worker vanished mid-call), look the charge up by key first;
//! 3. settle — in one transaction: record the outcome only if this attempt still owns the row,
//!    append the audit event, and move the order along.
//!
//! An attempt ends in one of three ways (`Outcome`): the money was taken; the gateway said it
//! took none; or nobody can tell (no answer, and no lookup could answer either). The last is
//! never a failure: while attempts remain the next one looks up first, and after the last one the
//! payment waits in `requires_confirmation`, its order and stock untouched, until a lookup answers.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use diesel::prelude::*;
use std::sync::Arc;

use super::domain::{IdempotencyKey, PayOrder, PaymentStatus};
use super::gateway::{Charge, ChargeRequest, GatewayError, PaymentGateway};
use super::refunds::{self, Refund};
use super::repo::{self, Failure, Payment};
use super::runtime::{Answers, GatewayRuntime};
use super::PaymentError;
use crate::clock::Clock;
use crate::config::PaymentSettings;

/// What becomes of the thing a payment pays for. The payments area does not know orders: it tells
/// their owner (the orders area) each final outcome, inside the transaction that settles the
/// payment, so the two never disagree.
pub trait PaymentOutcomes: Send + Sync {
    /// These payments completed: the money is taken.
    fn paid(&self, conn: &mut PgConnection, payments: &[Payment], now: DateTime<Utc>) -> QueryResult<()>;
    /// This payment failed for good, and certainly took no money.
    fn failed(&self, conn: &mut PgConnection, payment: &Payment, now: DateTime<Utc>) -> QueryResult<()>;
}

/// For a processor used on its own: outcomes go nowhere.
pub struct NoOutcomes;

impl PaymentOutcomes for NoOutcomes {
    fn paid(&self, _: &mut PgConnection, _: &[Payment], _: DateTime<Utc>) -> QueryResult<()> {
        Ok(())
    }
    fn failed(&self, _: &mut PgConnection, _: &Payment, _: DateTime<Utc>) -> QueryResult<()> {
        Ok(())
    }
}

pub struct PaymentProcessor {
    gateway: Arc<dyn PaymentGateway>,
    outcomes: Arc<dyn PaymentOutcomes>,
    runtime: GatewayRuntime,
    clock: Arc<dyn Clock>,
    settings: PaymentSettings,
}

pub enum Claim {
    /// Nothing to do now: completed, failed for good, awaiting confirmation, or another attempt
    /// is under way.
    Nothing(Payment),
    Attempt { payment: Payment, may_have_charged: bool },
}

/// What one visit to the gateway established.
pub enum Outcome {
    Charged(Charge),
    /// The gateway said no money was taken for this payment.
    NotCharged(GatewayError),
    /// Money may have been taken and nobody could say whether it was.
    Unknown(GatewayError),
}

/// Why a charge the gateway reports cannot complete this payment as it stands.
fn mismatch(payment: &Payment, charge: &Charge) -> Option<String> {
    // The gateway's answer is read as money once, here.
    let charged = super::money::Currency::parse(&charge.currency).map(|c| super::money::Money::stored(charge.amount.clone(), c));
    (charged.as_ref() != Some(&payment.money())).then(|| {
        format!(
            "the gateway's charge {} is for {} {}, the payment is for {}: held for review",
            charge.id,
            charge.amount.with_scale(2),
            charge.currency.to_uppercase(),
            payment.money()
        )
    })
}

fn chrono(d: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

impl PaymentProcessor {
    pub fn new(gateway: Arc<dyn PaymentGateway>, clock: Arc<dyn Clock>, settings: PaymentSettings) -> Self {
        PaymentProcessor { gateway, outcomes: Arc::new(NoOutcomes), runtime: GatewayRuntime::start(), clock, settings }
    }

    /// Who is told when a payment completes or fails for good (the orders area, in production).
    pub fn reporting_to(self, outcomes: Arc<dyn PaymentOutcomes>) -> Self {
        PaymentProcessor { outcomes, ..self }
    }

    /// Completes the attempt (if it still owns the payment) and tells the payment's owner.
    fn complete(&self, conn: &mut PgConnection, attempt: &Payment, charge: &Charge, now: DateTime<Utc>) -> QueryResult<Option<Payment>> {
        let completed = repo::complete_many(conn, &[(attempt.id, attempt.attempts, charge.id.clone())], attempt.status, now)?.pop();
        if let Some(payment) = &completed {
            self.outcomes.paid(conn, std::slice::from_ref(payment), now)?;
        }
        Ok(completed)
    }

    pub fn settings(&self) -> &PaymentSettings {
        &self.settings
    }

    pub fn process(&self, conn: &mut PgConnection, order: PayOrder) -> Result<Payment, PaymentError> {
        let claim = self.claim_many(conn, &[order])?.pop().expect("one claim per order")?;
        let (payment, may_have_charged) = match claim {
            Claim::Nothing(payment) => return Ok(payment),
            Claim::Attempt { payment, may_have_charged } => (payment, may_have_charged),
        };
        let outcome = self.runtime.run(self.attempt(&payment, may_have_charged));
        Ok(conn.transaction(|conn| self.settle(conn, &payment, outcome))?)
    }

    /// Claims the payments of these orders for one attempt each, in one transaction: every due
    /// payment in one statement (`repo::claim_due`: pending, failed and retryable, or processing
    /// with a lost attempt), the rest read as they are (`Nothing`). An order with no payment yet
    /// gets one created first (if it is the payer's and unpaid), then claimed the same way. Only
    /// the payer's own payment is ever claimed or returned. A database error is the whole batch's,
    /// and rolls every claim back.
    pub fn claim_many(&self, conn: &mut PgConnection, orders: &[PayOrder]) -> QueryResult<Vec<Result<Claim, PaymentError>>> {
        let now = self.clock.now();
        let lost_before = now - chrono(self.settings.processing_lease);
        let mine = |p: &Payment, o: &PayOrder| p.order_id == o.order_id && p.user_id == o.user_id;
        conn.transaction(|conn| {
            let unclaimed = |claimed: &[repo::ClaimedPayment], among: &[PayOrder]| -> Vec<PayOrder> {
                among.iter().filter(|o| !claimed.iter().any(|c| mine(&c.payment, o))).copied().collect()
            };
            let mut claimed = repo::claim_due(conn, orders, lost_before, self.settings.max_attempts, now)?;
            let rest = unclaimed(&claimed, orders);
            let mut known = if rest.is_empty() { Vec::new() } else { repo::for_orders(conn, &rest)? };
            let mut refused: Vec<(i64, PaymentError)> = Vec::new();
            let mut created: Vec<PayOrder> = Vec::new();
            for order in rest.iter().filter(|o| !known.iter().any(|p| mine(p, o))) {
                match create_for_order(conn, *order) {
                    Ok(_) => created.push(*order),
                    Err(PaymentError::Database(e)) => return Err(e),
                    Err(e) => refused.push((order.order_id, e)),
                }
            }
            if !created.is_empty() {
                claimed.extend(repo::claim_due(conn, &created, lost_before, self.settings.max_attempts, now)?);
                let still = unclaimed(&claimed, &created);
                if !still.is_empty() {
                    known.extend(repo::for_orders(conn, &still)?);
                }
            }
            Ok(orders
                .iter()
                .map(|order| {
                    if let Some(c) = claimed.iter().find(|c| mine(&c.payment, order)) {
                        let may_have_charged = match c.from_status.as_str() {
                            "processing" => true,
                            // After a refusal (503, 429) nothing can have been charged: no need to look first.
                            "failed" => c.previous_code.as_deref().is_some_and(may_have_charged),
                            _ => false,
                        };
                        return Ok(Claim::Attempt { payment: c.payment.clone(), may_have_charged });
                    }
                    if let Some(at) = refused.iter().position(|(id, _)| *id == order.order_id) {
                        return Err(refused.swap_remove(at).1);
                    }
                    let payment = known.iter().find(|p| mine(p, order)).ok_or(PaymentError::OrderNotFound)?;
                    Ok(Claim::Nothing(payment.clone()))
                })
                .collect())
        })
    }

    /// The gateway call for one claimed attempt, as a future that owns everything it needs. It
    /// counts itself in flight while it waits, and reports what it established.
    pub fn attempt(&self, payment: &Payment, may_have_charged: bool) -> impl std::future::Future<Output = Outcome> + Send + 'static {
        let call = call_gateway(self.gateway.clone(), payment.clone(), may_have_charged, self.is_last_attempt(payment));
        async move {
            let metrics = crate::metrics::metrics();
            metrics.in_flight(1);
            let started = std::time::Instant::now();
            let outcome = call.await;
            metrics.in_flight(-1);
            metrics.gateway_seconds.observe(started.elapsed().as_secs_f64());
            let label = match &outcome {
                Outcome::Charged(_) => "charged",
                Outcome::NotCharged(_) => "not_charged",
                Outcome::Unknown(_) => "unknown",
            };
            metrics.gateway_answers.with_label_values(&[label]).inc();
            outcome
        }
    }

    /// Starts these gateway calls all at once and returns without waiting; `ready` is called
    /// when the last answer is in (see `GatewayRuntime::start_all`).
    pub fn start_attempts<'a>(&self, attempts: impl IntoIterator<Item = (&'a Payment, bool)>, ready: impl FnOnce() + Send + 'static) -> Answers<Outcome> {
        self.runtime.start_all(attempts.into_iter().map(|(payment, may)| self.attempt(payment, may)).collect(), ready)
    }

    /// Settles many attempts in one transaction. Every clean charge completes in one statement;
    /// the rest (failures, unknowns, mismatches — and the charges too, should that statement
    /// fail) settle one by one, each in a savepoint of its own: one that fails is rolled back
    /// alone and reported, the others commit.
    pub fn settle_many(&self, conn: &mut PgConnection, settled: Vec<(Payment, Outcome)>) -> QueryResult<Vec<QueryResult<Payment>>> {
        let _timer = crate::metrics::metrics().settle_seconds.start_timer();
        let now = self.clock.now();
        let clean: Vec<(i64, i32, String)> = settled
            .iter()
            .filter_map(|(attempt, outcome)| match outcome {
                Outcome::Charged(charge) if attempt.status == PaymentStatus::Processing && mismatch(attempt, charge).is_none() => {
                    Some((attempt.id, attempt.attempts, charge.id.clone()))
                }
                _ => None,
            })
            .collect();
        conn.transaction(|conn| {
            let mut completed = match conn.transaction(|conn| {
                let done = repo::complete_many(conn, &clean, PaymentStatus::Processing, now)?;
                self.outcomes.paid(conn, &done, now)?;
                Ok::<_, diesel::result::Error>(done)
            }) {
                Ok(done) => done,
                Err(e) => {
                    log::warn!("completing {} charges at once failed, settling them one by one: {e}", clean.len());
                    Vec::new()
                }
            };
            let mut results = Vec::with_capacity(settled.len());
            for (attempt, outcome) in settled {
                if let Some(at) = completed.iter().position(|p| p.id == attempt.id) {
                    results.push(Ok(completed.swap_remove(at)));
                    continue;
                }
                results.push(conn.transaction(|conn| self.settle(conn, &attempt, outcome)));
            }
            Ok(results)
        })
    }

    fn is_last_attempt(&self, payment: &Payment) -> bool {
        payment.retry_count + 1 >= self.settings.max_attempts
    }

    /// Whether a `processing` attempt has outlived its lease: its worker is presumed gone.
    fn attempt_lost(&self, payment: &Payment, now: DateTime<Utc>) -> bool {
        payment.processing_started_at.is_some_and(|started| started + chrono(self.settings.processing_lease) <= now)
    }

    fn settle(&self, conn: &mut PgConnection, attempt: &Payment, outcome: Outcome) -> QueryResult<Payment> {
        let now = self.clock.now();
        let last = self.is_last_attempt(attempt);
        let settled = match outcome {
            Outcome::Charged(charge) => match mismatch(attempt, &charge) {
                Some(why) => self.await_confirmation(conn, attempt, "charge_mismatch", &why, now)?,
                None => self.complete(conn, attempt, &charge, now)?,
            },
            Outcome::Unknown(error) if last => {
                let why = format!("{error}, and the gateway could not confirm whether it charged: asking it again");
                self.await_confirmation(conn, attempt, error.code(), &why, now)?
            }
            Outcome::Unknown(error) => self.fail(conn, attempt, &error, true, error.to_string(), now)?,
            Outcome::NotCharged(error) => {
                let retry = error.is_transient() && !last;
                let message = if error.is_transient() && !retry {
                    format!("{error} (gave up after {} attempts; no charge was made)", self.settings.max_attempts)
                } else {
                    error.to_string()
                };
                self.fail(conn, attempt, &error, retry, message, now)?
            }
        };
        match settled {
            Some(payment) => Ok(payment),
            None => self.lost_claim(conn, attempt),
        }
    }

    fn fail(
        &self,
        conn: &mut PgConnection,
        attempt: &Payment,
        error: &GatewayError,
        retryable: bool,
        message: String,
        now: DateTime<Utc>,
    ) -> QueryResult<Option<Payment>> {
        let failure = Failure { code: error.code(), message: &message, retryable, counts_as_retry: error.is_transient() };
        let Some(failed) = repo::fail_attempt(conn, attempt.id, attempt.attempts, attempt.status, &failure, now)? else {
            return Ok(None);
        };
        repo::record_event(conn, failed.id, Some(attempt.status), PaymentStatus::Failed, &message)?;
        if !retryable {
            self.outcomes.failed(conn, &failed, now)?;
        }
        Ok(Some(failed))
    }

    /// Parks the payment until the gateway can say what happened; its order keeps its stock.
    fn await_confirmation(&self, conn: &mut PgConnection, attempt: &Payment, code: &str, why: &str, now: DateTime<Utc>) -> QueryResult<Option<Payment>> {
        let next = now + chrono(self.settings.confirm_backoff_base);
        let parked = repo::await_confirmation(conn, attempt.id, attempt.attempts, attempt.status, code, why, next, now)?;
        if let Some(parked) = &parked {
            log::warn!("payment {} needs confirmation: {why}", parked.reference);
            repo::record_event(conn, parked.id, Some(attempt.status), PaymentStatus::RequiresConfirmation, why)?;
        }
        Ok(parked)
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
            self.outcomes.failed(conn, &refused, now)?;
            Ok(refused)
        })
    }

    /// The charge job for this payment is given up on (out of attempts). Called with the order's
    /// row locked. A payment that may have been charged is never failed here: a live or lost
    /// attempt is left to finish or be reconciled, and one whose last attempt had no answer waits
    /// for confirmation. `true` when the payment is now failed for good, so the order may close.
    pub fn give_up(&self, conn: &mut PgConnection, order_id: i64, reason: &str) -> QueryResult<bool> {
        let Some(payment) = repo::lock_by_order(conn, order_id)? else { return Ok(true) };
        let now = self.clock.now();
        match payment.status {
            PaymentStatus::Completed | PaymentStatus::Processing | PaymentStatus::RequiresConfirmation => Ok(false),
            PaymentStatus::Failed if !payment.retryable => Ok(true),
            PaymentStatus::Failed if payment.error_code.as_deref().is_some_and(may_have_charged) => {
                let why = format!("{reason}; the last attempt had no clear answer: asking the gateway");
                let next = now + chrono(self.settings.confirm_backoff_base);
                repo::park(conn, payment.id, &why, next, now)?;
                repo::record_event(conn, payment.id, Some(payment.status), PaymentStatus::RequiresConfirmation, &why)?;
                Ok(false)
            }
            PaymentStatus::Pending | PaymentStatus::Failed => {
                let why = format!("{reason}; no charge was made");
                repo::give_up(conn, payment.id, &why, now)?;
                repo::record_event(conn, payment.id, Some(payment.status), PaymentStatus::Failed, &why)?;
                Ok(true)
            }
        }
    }

    /// Asks the gateway about a payment whose outcome is open — stuck in `processing` past its
    /// lease, or awaiting confirmation and due (or `now` when an administrator asks) — and
    /// settles it from the answer. It never charges.
    pub fn confirm(&self, conn: &mut PgConnection, payment_id: i64, now_please: bool) -> Result<Payment, PaymentError> {
        let now = self.clock.now();
        let claimed = conn.transaction(|conn| {
            let payment = repo::lock_by_id(conn, payment_id)?.ok_or(PaymentError::PaymentNotFound)?;
            let claimed = match payment.status {
                PaymentStatus::Processing if self.attempt_lost(&payment, now) => repo::start_attempt(
                    conn, payment.id, PaymentStatus::Processing, "stuck in processing; reconciling with the gateway", now,
                )?,
                PaymentStatus::RequiresConfirmation if now_please || payment.next_check_at.is_some_and(|t| t <= now) => {
                    // Held for one lease, so that a second checker leaves it alone meanwhile.
                    repo::claim_check(conn, payment.id, now + chrono(self.settings.processing_lease), now)?
                }
                _ => return Ok::<_, PaymentError>(Err(payment)),
            };
            Ok(Ok(claimed))
        })?;
        let attempt = match claimed {
            Ok(attempt) => attempt,
            Err(untouched) => return Ok(untouched),
        };
        let outcome = match self.runtime.run(self.gateway.clone().lookup(attempt.gateway_key.clone())) {
            Ok(Some(charge)) => Outcome::Charged(charge),
            Ok(None) => Outcome::NotCharged(GatewayError::Unavailable("the gateway has no charge for this payment".into())),
            Err(error) => Outcome::Unknown(error),
        };
        Ok(conn.transaction(|conn| match attempt.status {
            PaymentStatus::RequiresConfirmation => self.settle_check(conn, &attempt, outcome),
            _ => self.settle(conn, &attempt, outcome),
        })?)
    }

    /// The answer to a confirmation check: charged completes, "no charge" fails for good (now we
    /// know), and still no answer asks again after a longer pause.
    fn settle_check(&self, conn: &mut PgConnection, check: &Payment, outcome: Outcome) -> QueryResult<Payment> {
        let now = self.clock.now();
        let from = PaymentStatus::RequiresConfirmation;
        let settled = match outcome {
            Outcome::Charged(charge) => match mismatch(check, &charge) {
                Some(why) => self.recheck_later(conn, check, "charge_mismatch", &why, now)?,
                None => self.complete(conn, check, &charge, now)?,
            },
            Outcome::NotCharged(error) => {
                let message = "the gateway confirmed that no charge was made".to_string();
                let failure = Failure { code: error.code(), message: &message, retryable: false, counts_as_retry: false };
                let failed = repo::fail_attempt(conn, check.id, check.attempts, from, &failure, now)?;
                if let Some(failed) = &failed {
                    repo::record_event(conn, failed.id, Some(from), PaymentStatus::Failed, &message)?;
                    self.outcomes.failed(conn, failed, now)?;
                }
                failed
            }
            Outcome::Unknown(error) => {
                let why = format!("still no answer from the gateway ({error})");
                self.recheck_later(conn, check, error.code(), &why, now)?
            }
        };
        match settled {
            Some(payment) => Ok(payment),
            None => self.lost_claim(conn, check),
        }
    }

    fn recheck_later(&self, conn: &mut PgConnection, check: &Payment, code: &str, why: &str, now: DateTime<Utc>) -> QueryResult<Option<Payment>> {
        let checks = check.confirmation_checks + 1;
        let next = now + chrono(self.confirm_pause(checks));
        let why = format!("{why}; next check at {} UTC", next.format("%Y-%m-%d %H:%M"));
        let rescheduled = repo::recheck_later(conn, check.id, check.attempts, code, &why, checks, next, now)?;
        if rescheduled.is_some() {
            let status = PaymentStatus::RequiresConfirmation;
            repo::record_event(conn, check.id, Some(status), status, &why)?;
        }
        Ok(rescheduled)
    }

    /// An operator settles a payment whose outcome the machinery could not establish (awaiting
    /// confirmation, or failed/pending with its job dead), after asking the gateway themselves:
    /// `Some(charge id)` completes it — balance, ledger and order as any completion — and `None`
    /// fails it for good. The note is the event's reason. `None` when the payment is final already
    /// or an attempt is running.
    pub fn settle_by_hand(&self, conn: &mut PgConnection, payment_id: i64, charge_id: Option<String>, note: &str) -> QueryResult<Option<Payment>> {
        conn.transaction(|conn| {
            let Some(payment) = repo::lock_by_id(conn, payment_id)? else { return Ok(None) };
            let open = match payment.status {
                PaymentStatus::RequiresConfirmation | PaymentStatus::Pending => true,
                PaymentStatus::Failed => payment.retryable,
                PaymentStatus::Processing | PaymentStatus::Completed => false,
            };
            if !open {
                return Ok(None);
            }
            let now = self.clock.now();
            let why = format!("settled by hand: {note}");
            match charge_id {
                Some(charge) => {
                    let Some(done) = repo::complete_many(conn, &[(payment.id, payment.attempts, charge)], payment.status, now)?.pop() else {
                        return Ok(None);
                    };
                    repo::record_event(conn, done.id, Some(PaymentStatus::Completed), PaymentStatus::Completed, &why)?;
                    self.outcomes.paid(conn, std::slice::from_ref(&done), now)?;
                    Ok(Some(done))
                }
                None => {
                    repo::give_up(conn, payment.id, &why, now)?;
                    repo::record_event(conn, payment.id, Some(payment.status), PaymentStatus::Failed, &why)?;
                    let failed = repo::reload(conn, payment.id)?;
                    self.outcomes.failed(conn, &failed, now)?;
                    Ok(Some(failed))
                }
            }
        })
    }

    /// One attempt at a pending refund: claim it, ask the gateway (outside any transaction), settle
    /// the answer. Returns the refund as it is left: `pending` when the gateway gave no answer that
    /// settles it (the caller tries again later; the next attempt looks it up first).
    pub fn process_refund(&self, conn: &mut PgConnection, refund_id: i64) -> QueryResult<Option<Refund>> {
        let now = self.clock.now();
        let Some(attempt) = conn.transaction(|conn| refunds::claim(conn, refund_id, now))? else {
            return refunds::find(conn, refund_id);
        };
        let (gateway, call) = (self.gateway.clone(), attempt.clone());
        let outcome = self.runtime.run(async move { refunds::call_gateway(gateway, &call).await });
        let now = self.clock.now();
        conn.transaction(|conn| refunds::settle(conn, &attempt, outcome, now)).map(Some)
    }

    /// The pause after the `checks`-th unanswered check: minutes at first, then hours.
    pub fn confirm_pause(&self, checks: i32) -> std::time::Duration {
        let base = self.settings.confirm_backoff_base;
        let doubled = base.saturating_mul(2u32.saturating_pow(checks.clamp(0, 20) as u32));
        doubled.min(self.settings.confirm_backoff_max)
    }
}

/// One attempt at the gateway. If an earlier attempt may have charged, the charge is looked up
/// first; after the last attempt an open outcome is looked up at once rather than left open.
async fn call_gateway(gateway: Arc<dyn PaymentGateway>, payment: Payment, may_have_charged: bool, last: bool) -> Outcome {
    if may_have_charged {
        match gateway.clone().lookup(payment.gateway_key.clone()).await {
            Ok(Some(charge)) => return Outcome::Charged(charge),
            Ok(None) => {}
            Err(error) => return Outcome::Unknown(error),
        }
    }
    let request = ChargeRequest {
        idempotency_key: payment.gateway_key.clone(),
        money: payment.money(),
        payment_method: payment.payment_method.clone(),
    };
    let error = match gateway.clone().charge(request).await {
        Ok(charge) => return Outcome::Charged(charge),
        Err(error) => error,
    };
    if !error.may_have_charged() {
        return Outcome::NotCharged(error);
    }
    if !last {
        return Outcome::Unknown(error);
    }
    match gateway.lookup(payment.gateway_key.clone()).await {
        Ok(Some(charge)) => Outcome::Charged(charge),
        Ok(None) => Outcome::NotCharged(error),
        Err(_) => Outcome::Unknown(error),
    }
}

/// Error codes an attempt can end with when the gateway may have charged.
fn may_have_charged(code: &str) -> bool {
    matches!(code, "gateway_timeout" | "gateway_error")
}

/// Finds or creates the order's payment and locks it, in the caller's transaction. `true` when it
/// was created by this call. The amount is the order's; the order must be the user's and unpaid.
/// For callers that usually find it (a job, a retry): it looks before it inserts.
pub fn create_for_order(conn: &mut PgConnection, order: PayOrder) -> Result<(Payment, bool), PaymentError> {
    let key = IdempotencyKey::for_order(order.user_id, order.order_id);
    if let Some(payment) = repo::lock_by_key(conn, &key)? {
        return Ok((payment, false));
    }
    open_for_order(conn, order)
}

/// `create_for_order` for callers that usually create it (Pay): one statement when it is new.
/// Insert-if-absent is one statement that concurrent callers cannot both win; the loser locks
/// what the winner made.
pub fn open_for_order(conn: &mut PgConnection, order: PayOrder) -> Result<(Payment, bool), PaymentError> {
    let key = IdempotencyKey::for_order(order.user_id, order.order_id);
    if let Some(created) = repo::insert_for_order(conn, order.user_id, order.order_id, &key, uuid::Uuid::new_v4())? {
        return Ok((created, true));
    }
    let payment = repo::lock_by_key(conn, &key)?.ok_or(PaymentError::OrderNotFound)?;
    Ok((payment, false))
}
