//! Refunds: money given back through the gateway, exactly once.
//!
//! The same discipline as charges: the refund is reserved first, in one transaction under the
//! payment's row lock (what remains is checked and the balance debited with its ledger entry, so
//! two clicks cannot both take the last of it); the gateway is called outside any transaction
//! under the refund's own key; the answer is settled only by the attempt that claimed it (a
//! fencing token). An answer that never came is looked up before anything is sent again.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Numeric, Text, Timestamptz};
use serde::Serialize;
use std::sync::Arc;
use uuid::Uuid;

use super::money::{Currency, Money};
use super::gateway::{GatewayError, GatewayRefund, PaymentGateway, RefundRequest};
use super::repo::{self as payments, Payment};
use super::PaymentStatus;
use crate::schema::{customer_balances, payments as payments_table, refunds};

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Serialize)]
#[diesel(table_name = refunds, check_for_backend(diesel::pg::Pg))]
pub struct Refund {
    pub id: i64,
    pub reference: Uuid,
    pub payment_id: i64,
    pub customer_id: i64,
    pub user_id: i64,
    pub amount: BigDecimal,
    pub currency: Currency,
    pub status: String,
    pub reason: Option<String>,
    pub idempotency_key: String,
    pub gateway_key: String,
    pub gateway_refund_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Refund {
    /// What it gives back.
    pub fn money(&self) -> Money {
        Money::stored(self.amount.clone(), self.currency)
    }
}

pub const PENDING: &str = "pending";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

/// Why a refund is asked for (Stripe's three reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundReason {
    Duplicate,
    Fraudulent,
    RequestedByCustomer,
}

impl RefundReason {
    pub const ALL: [RefundReason; 3] = [RefundReason::Duplicate, RefundReason::Fraudulent, RefundReason::RequestedByCustomer];

    pub fn as_str(self) -> &'static str {
        match self {
            RefundReason::Duplicate => "duplicate",
            RefundReason::Fraudulent => "fraudulent",
            RefundReason::RequestedByCustomer => "requested_by_customer",
        }
    }

    pub fn parse(raw: &str) -> Option<RefundReason> {
        RefundReason::ALL.into_iter().find(|r| r.as_str() == raw)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error("no payment with that id")]
    PaymentNotFound,
    #[error("only completed payments can be refunded; this one is {0}")]
    NotRefundable(PaymentStatus),
    #[error("this payment has already been refunded in full")]
    AlreadyRefunded,
    #[error("the refund ({requested}) is more than what remains to refund ({remaining})")]
    AmountTooLarge { requested: String, remaining: String },
    #[error("the balance available ({available}) is smaller than the refund ({requested})")]
    InsufficientBalance { available: String, requested: String },
    #[error("a refund is in its payment's currency, {0}")]
    WrongCurrency(Currency),
    #[error("this key was used for a refund of another payment; use a new key")]
    KeyReused,
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// A request to give back (part of) a payment.
pub struct NewRefund {
    pub payment_id: i64,
    pub user_id: i64,
    /// `None`: all that remains. In the payment's currency.
    pub amount: Option<Money>,
    pub reason: Option<RefundReason>,
    /// The requester's key, already scoped to them (`api:7:…`, `dashboard:7:…`).
    pub idempotency_key: String,
}

/// The key a refund is made under at the gateway: from its random reference, like a charge's.
pub fn gateway_key(reference: Uuid) -> String {
    format!("rf_{}", reference.simple())
}

/// Reserves a refund in the caller's transaction: locks the payment, returns the refund already
/// made under this key if there is one, else checks what remains and the balance, debits the
/// balance with its ledger entry, and records the refund (`pending`) and its event. `true` when it
/// was created by this call.
pub fn reserve(conn: &mut PgConnection, request: &NewRefund, now: DateTime<Utc>) -> Result<(Refund, bool), RefundError> {
    let payment = payments::lock_by_id(conn, request.payment_id)?.ok_or(RefundError::PaymentNotFound)?;
    let earlier: Option<Refund> = refunds::table
        .filter(refunds::idempotency_key.eq(&request.idempotency_key))
        .select(Refund::as_select())
        .first(conn)
        .optional()?;
    match earlier {
        Some(earlier) if earlier.payment_id == payment.id => return Ok((earlier, false)),
        // The requester's key names a refund of another payment: refuse, rather than answer
        // this request with that refund (and make nothing).
        Some(_) => return Err(RefundError::KeyReused),
        None => {}
    }
    if payment.status != PaymentStatus::Completed {
        return Err(RefundError::NotRefundable(payment.status));
    }
    let remaining = Money::stored(&payment.amount - &payment.amount_refunded, payment.currency);
    if !remaining.is_positive() {
        return Err(RefundError::AlreadyRefunded);
    }
    let money = match &request.amount {
        None => remaining.clone(),
        Some(asked) if asked.currency() != payment.currency => return Err(RefundError::WrongCurrency(payment.currency)),
        Some(asked) => asked.clone(),
    };
    if money.amount() > remaining.amount() {
        return Err(RefundError::AmountTooLarge { requested: money.to_string(), remaining: remaining.to_string() });
    }
    debit(conn, &payment, &money, now)?;
    let reference = Uuid::new_v4();
    let refund: Refund = diesel::insert_into(refunds::table)
        .values((
            refunds::reference.eq(reference),
            refunds::payment_id.eq(payment.id),
            refunds::customer_id.eq(payment.customer_id),
            refunds::user_id.eq(request.user_id),
            refunds::amount.eq(money.amount()),
            refunds::currency.eq(money.currency()),
            refunds::reason.eq(request.reason.map(RefundReason::as_str)),
            refunds::idempotency_key.eq(&request.idempotency_key),
            refunds::gateway_key.eq(gateway_key(reference)),
            refunds::created_at.eq(now),
            refunds::updated_at.eq(now),
        ))
        .returning(Refund::as_returning())
        .get_result(conn)?;
    ledger(conn, payment.customer_id, "refund", &money.negated(), reference, now)?;
    diesel::update(payments_table::table.find(payment.id))
        .set(payments_table::amount_refunded.eq(payments_table::amount_refunded + money.amount()))
        .execute(conn)?;
    let why = format!("refund {reference} of {money} requested");
    payments::record_event(conn, payment.id, Some(payment.status), payment.status, &why)?;
    Ok((refund, true))
}

/// Takes the refund from the customer's balance, which must cover it (checked and changed in one
/// statement, under the balance row's lock).
fn debit(conn: &mut PgConnection, payment: &Payment, money: &Money, now: DateTime<Utc>) -> Result<(), RefundError> {
    let left: Option<BigDecimal> = diesel::update(
        customer_balances::table
            .find((payment.customer_id, money.currency().code()))
            .filter(customer_balances::available.ge(money.amount())),
    )
    .set((customer_balances::available.eq(customer_balances::available - money.amount()), customer_balances::updated_at.eq(now)))
    .returning(customer_balances::available)
    .get_result(conn)
    .optional()?;
    if left.is_some() {
        return Ok(());
    }
    let available: BigDecimal = customer_balances::table
        .find((payment.customer_id, money.currency().code()))
        .select(customer_balances::available)
        .first(conn)
        .optional()?
        .unwrap_or_default();
    Err(RefundError::InsufficientBalance { available: Money::stored(available, money.currency()).to_string(), requested: money.to_string() })
}

/// Gives money back to the balance (a refund that failed), with its ledger entry.
fn credit(conn: &mut PgConnection, customer_id: i64, money: &Money, now: DateTime<Utc>) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO customer_balances AS b (customer_id, currency, available, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (customer_id, currency) DO UPDATE SET available = b.available + EXCLUDED.available, updated_at = $4",
    )
    .bind::<BigInt, _>(customer_id)
    .bind::<Text, _>(money.currency())
    .bind::<Numeric, _>(money.amount())
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .map(drop)
}

fn ledger(conn: &mut PgConnection, customer_id: i64, kind: &str, money: &Money, source: Uuid, now: DateTime<Utc>) -> QueryResult<()> {
    use crate::schema::balance_transactions as bt;
    diesel::insert_into(bt::table)
        .values((
            bt::customer_id.eq(customer_id),
            bt::kind.eq(kind),
            bt::amount.eq(money.amount()),
            bt::currency.eq(money.currency()),
            bt::source.eq(source),
            bt::created_at.eq(now),
        ))
        .execute(conn)
        .map(drop)
}

/// A refund claimed for one gateway attempt, with the charge it gives back.
#[derive(Debug, Clone)]
pub struct RefundAttempt {
    pub refund: Refund,
    pub charge_id: String,
}

/// Claims a pending refund for one attempt: a new fencing token. `None` when it is settled.
pub fn claim(conn: &mut PgConnection, refund_id: i64, now: DateTime<Utc>) -> QueryResult<Option<RefundAttempt>> {
    let Some(refund) = diesel::update(refunds::table.find(refund_id).filter(refunds::status.eq(PENDING)))
        .set((refunds::attempts.eq(refunds::attempts + 1), refunds::updated_at.eq(now)))
        .returning(Refund::as_returning())
        .get_result::<Refund>(conn)
        .optional()?
    else {
        return Ok(None);
    };
    let charge_id: Option<String> =
        payments_table::table.find(refund.payment_id).select(payments_table::external_transaction_id).first(conn)?;
    Ok(Some(RefundAttempt { charge_id: charge_id.unwrap_or_default(), refund }))
}

/// What one visit to the gateway established about a refund.
pub enum RefundOutcome {
    Refunded(GatewayRefund),
    /// The gateway refused it: no money went back, and asking again gives the same answer.
    Refused(GatewayError),
    /// No answer, or an answer that does not settle it: the refund stays pending and is tried
    /// again (looking it up first).
    Open(GatewayError),
}

/// The gateway call for one claimed attempt. Every attempt after the first looks the refund up
/// before sending it: the earlier one may have reached the gateway.
pub async fn call_gateway(gateway: Arc<dyn PaymentGateway>, attempt: &RefundAttempt) -> RefundOutcome {
    let refund = &attempt.refund;
    let lookup = |gateway: Arc<dyn PaymentGateway>| gateway.lookup_refund(refund.gateway_key.clone());
    if refund.attempts > 1 {
        match lookup(gateway.clone()).await {
            Ok(Some(done)) => return RefundOutcome::Refunded(done),
            Ok(None) => {}
            Err(error) => return RefundOutcome::Open(error),
        }
    }
    let request = RefundRequest {
        idempotency_key: refund.gateway_key.clone(),
        charge_id: attempt.charge_id.clone(),
        money: refund.money(),
    };
    let error = match gateway.clone().refund(request).await {
        Ok(done) => return RefundOutcome::Refunded(done),
        Err(error) => error,
    };
    if !error.is_transient() {
        return RefundOutcome::Refused(error);
    }
    if error.may_have_charged() {
        if let Ok(Some(done)) = lookup(gateway).await {
            return RefundOutcome::Refunded(done);
        }
    }
    RefundOutcome::Open(error)
}

/// Records the attempt's outcome, in the caller's transaction, if the attempt still owns the
/// refund. A refusal gives the money back to the balance and to the payment's refundable amount.
pub fn settle(conn: &mut PgConnection, attempt: &RefundAttempt, outcome: RefundOutcome, now: DateTime<Utc>) -> QueryResult<Refund> {
    let refund = &attempt.refund;
    let mine = refunds::table.find(refund.id).filter(refunds::status.eq(PENDING).and(refunds::attempts.eq(refund.attempts)));
    let (settled, event) = match outcome {
        RefundOutcome::Refunded(done) => {
            let settled = diesel::update(mine)
                .set((
                    refunds::status.eq(SUCCEEDED),
                    refunds::gateway_refund_id.eq(&done.id),
                    refunds::failure_code.eq(None::<String>),
                    refunds::failure_message.eq(None::<String>),
                    refunds::updated_at.eq(now),
                ))
                .returning(Refund::as_returning())
                .get_result::<Refund>(conn)
                .optional()?;
            (settled, format!("refund {} of {} succeeded, gateway refund {}", refund.reference, refund.money(), done.id))
        }
        RefundOutcome::Refused(error) => {
            let settled = diesel::update(mine)
                .set((
                    refunds::status.eq(FAILED),
                    refunds::failure_code.eq(error.code()),
                    refunds::failure_message.eq(error.to_string()),
                    refunds::updated_at.eq(now),
                ))
                .returning(Refund::as_returning())
                .get_result::<Refund>(conn)
                .optional()?;
            if settled.is_some() {
                diesel::update(payments_table::table.find(refund.payment_id))
                    .set(payments_table::amount_refunded.eq(payments_table::amount_refunded - &refund.amount))
                    .execute(conn)?;
                credit(conn, refund.customer_id, &refund.money(), now)?;
                ledger(conn, refund.customer_id, "refund_failure", &refund.money(), refund.reference, now)?;
            }
            (settled, format!("refund {} of {} failed: {error}; the amount is back in the balance", refund.reference, refund.money()))
        }
        RefundOutcome::Open(error) => {
            let message = format!("{error}; the gateway will be asked again before anything is resent");
            let settled = diesel::update(mine)
                .set((refunds::failure_code.eq(error.code()), refunds::failure_message.eq(&message), refunds::updated_at.eq(now)))
                .returning(Refund::as_returning())
                .get_result::<Refund>(conn)
                .optional()?;
            (settled, format!("refund {} of {} has no answer yet: {error}", refund.reference, refund.money()))
        }
    };
    match settled {
        Some(settled) => {
            let completed = PaymentStatus::Completed;
            payments::record_event(conn, refund.payment_id, Some(completed), completed, &event)?;
            Ok(settled)
        }
        // A later attempt owns it now (or it was settled by hand): that one decides.
        None => refunds::table.find(refund.id).select(Refund::as_select()).first(conn),
    }
}


pub fn find(conn: &mut PgConnection, refund_id: i64) -> QueryResult<Option<Refund>> {
    refunds::table.find(refund_id).select(Refund::as_select()).first(conn).optional()
}

pub fn for_payment(conn: &mut PgConnection, payment_id: i64) -> QueryResult<Vec<Refund>> {
    refunds::table.filter(refunds::payment_id.eq(payment_id)).order(refunds::id.asc()).select(Refund::as_select()).load(conn)
}

/// Settles a pending refund by hand (an operator who checked with the gateway), with the same
/// bookkeeping as an answer from it. `None` when it is not pending.
pub fn settle_by_hand(conn: &mut PgConnection, refund_id: i64, succeeded: Option<String>, note: &str, now: DateTime<Utc>) -> QueryResult<Option<Refund>> {
    conn.transaction(|conn| {
        let Some(attempt) = claim(conn, refund_id, now)? else { return Ok(None) };
        let outcome = match succeeded {
            Some(gateway_id) => RefundOutcome::Refunded(GatewayRefund {
                id: gateway_id,
                idempotency_key: attempt.refund.gateway_key.clone(),
                charge: attempt.charge_id.clone(),
                amount: attempt.refund.amount.clone(),
                currency: attempt.refund.currency.to_string(),
                created_at: now,
            }),
            None => RefundOutcome::Refused(GatewayError::Unavailable(format!("settled by hand: {note}"))),
        };
        settle(conn, &attempt, outcome, now).map(Some)
    })
}
