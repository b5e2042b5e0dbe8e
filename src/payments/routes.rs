//! The payment page: status, amount, the gateway's transaction id and the full history.

use actix_web::{HttpRequest, web, HttpResponse};
use askama::Template;
use uuid::Uuid;

use super::repo::{self, Payment, PaymentEvent};
use super::PaymentStatus;
use crate::auth::CurrentUser;
use crate::web::{html, AppError, Db, Layout};

#[derive(Template)]
#[template(path = "payment.html")]
struct PaymentPage {
    layout: Layout,
    payment: Payment,
    amount: String,
    /// The history in a shopper's words: when, and what happened.
    history: Vec<(String, &'static str)>,
    headline: &'static str,
    advice: String,
    in_flight: bool,
    /// Seconds between the page's own refreshes while something is still to happen.
    refresh: u32,
    /// Only a failure shows its reason as a problem: an open question is not one.
    failed: bool,
    /// The state in a shopper's words (`status_word`).
    word: &'static str,
    /// The provider's code for a refusal, for support to look up: not its message (written for
    /// card forms this checkout does not have), nor a fraud rule's internals.
    decline_code: Option<String>,
    support: &'static str,
}

/// Where shoppers write when a payment went wrong (shown on every failed payment's page).
pub const SUPPORT_EMAIL: &str = "support@agora.example";

/// What the person paying should understand, and do, in each state.
fn explain(payment: &Payment) -> (&'static str, String) {
    match payment.status {
        PaymentStatus::Completed => ("Paid", "Your payment went through. Your receipt is on the order's page (linked below).".into()),
        PaymentStatus::Pending | PaymentStatus::Processing => (
            "Processing",
            "We are confirming your payment with the payment provider. This page refreshes by itself; \
             there is no need to press Pay again — you will not be charged twice."
                .into(),
        ),
        PaymentStatus::RequiresConfirmation => (
            "Confirming with the payment provider",
            "The payment provider did not give us a clear answer about this payment, so we are asking \
             it again and will update this page as soon as it replies. You will not be charged twice, and \
             your items stay reserved for you meanwhile. There is nothing you need to do."
                .into(),
        ),
        PaymentStatus::Failed if payment.retryable => (
            "Retrying",
            "The payment provider did not answer in time. We try again automatically, waiting a little \
             longer each time; you will never be charged twice. This page refreshes by itself."
                .into(),
        ),
        PaymentStatus::Failed => {
            // Checkout asks for no card (the payment method is the account's), so nothing here
            // asks the shopper to check card details they never typed.
            let advice = match payment.error_code.as_deref() {
                Some("insufficient_funds") => "The payment provider declined the payment: the account it was \
                                               charged to had too little money. No money was taken. You can try again \
                                               below once funds are available.",
                Some("gateway_timeout" | "gateway_unavailable") => "The payment provider kept failing, so we \
                                               stopped trying. No money was taken. Please try again later.",
                Some("fraud_rejected") => "We could not accept this payment automatically. No money was taken. \
                                           If you think this is a mistake, write to support (below).",
                _ => "The payment provider refused this payment. No money was taken. You can try again below; if \
                      it is refused again, write to support (below).",
            };
            ("Payment failed", advice.into())
        }
    }
}

/// A payment's history as the person paying should read it. The events' own reasons are for
/// operators ("attempt 2 of 5 after: Gateway timeout"); here each step is said plainly, and a
/// failure that was retried is not called one.
fn shopper_history(events: &[PaymentEvent], payment: &Payment) -> Vec<(String, &'static str)> {
    let words = repo::history_in_words(events, is_final(payment));
    events.iter().zip(words).map(|(event, words)| (event.created_at.format("%Y-%m-%d %H:%M:%S").to_string(), words)).collect()
}

/// Nothing more will happen to the payment: paid, or failed with no retry to come.
fn is_final(payment: &Payment) -> bool {
    payment.status == PaymentStatus::Completed || (payment.status == PaymentStatus::Failed && !payment.retryable)
}

/// The payment's state for scripts and API clients.
async fn status(user: CurrentUser, db: Db, path: web::Path<String>) -> Result<HttpResponse, AppError> {
    let reference = Uuid::parse_str(&path).map_err(|_| AppError::NotFound)?;
    let user_id = user.0.id;
    let payment = db.run(move |conn| repo::find_for_user(conn, reference, user_id)?.ok_or(AppError::NotFound)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "reference": payment.reference,
        "status": payment.status.as_str(),
        "word": super::domain::status_word(payment.status, payment.retryable),
        "final": is_final(&payment),
        "amount": payment.amount.with_scale(2).to_string(),
        "currency": payment.currency,
        "transaction_id": payment.external_transaction_id,
        "error": payment.error_message,
    })))
}

async fn show(req: HttpRequest, user: CurrentUser, db: Db, path: web::Path<String>) -> Result<HttpResponse, AppError> {
    let reference = Uuid::parse_str(&path).map_err(|_| AppError::NotFound)?;
    let user_id = user.0.id;
    let (payment, events) = db
        .run(move |conn| {
            let payment = repo::find_for_user(conn, reference, user_id)?.ok_or(AppError::NotFound)?;
            let events = repo::events(conn, payment.id)?;
            Ok::<_, AppError>((payment, events))
        })
        .await?;
    let (headline, advice) = explain(&payment);
    // An unconfirmed payment is re-checked in minutes, not seconds: no need to reload every 2 s.
    let refresh = if payment.status == PaymentStatus::RequiresConfirmation { 30 } else { 2 };
    html(PaymentPage {
        refresh,
        // A failure that will be retried is not shown as a problem: it is still being worked on.
        failed: payment.status == PaymentStatus::Failed && !payment.retryable,
        word: super::domain::status_word(payment.status, payment.retryable),
        decline_code: payment.error_code.clone().filter(|code| code != "fraud_rejected"),
        support: SUPPORT_EMAIL,
        layout: Layout::new(&req),
        amount: payment.money().to_string(),
        in_flight: !is_final(&payment),
        headline,
        advice,
        history: shopper_history(&events, &payment),
        payment,
    })
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/payments/{reference}", web::get().to(show))
        .route("/payments/{reference}/status", web::get().to(status));
}
