//! Refunds from the dashboard: a confirmation step, then the refund; a refund whose job died is
//! sent again or settled by hand.

use actix_session::Session;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::merchants::jobs::refund_job;
use crate::merchants::repo::{self};
use crate::merchants::{service, MerchantError};
use super::*;
use crate::merchants::ids::REFUND;
use crate::auth::CurrentUser;
use crate::jobs;
use crate::payments::Money;
use crate::payments::refunds::{self, Refund, RefundReason};
use crate::web::{html, see_other_with_notice, AppError, Db, Layout};

pub(super) struct RefundView {
    pub reference: String,
    pub amount: String,
    pub status: String,
    pub reason: String,
    pub created: String,
    pub problem: Option<String>,
    pub stuck: bool,
}

pub(super) fn refund_view(r: &Refund, stuck: bool) -> RefundView {
    RefundView {
        reference: REFUND.show(r.reference),
        amount: r.money().to_string(),
        status: r.status.clone(),
        reason: r.reason.clone().unwrap_or_default().replace('_', " "),
        created: r.created_at.format("%Y-%m-%d %H:%M").to_string(),
        problem: r.failure_message.clone(),
        stuck,
    }
}

#[derive(Deserialize)]
pub(super) struct RefundForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
    /// Absent: show the confirmation step; `yes`: make the refund.
    #[serde(default)]
    confirm: String,
}

#[derive(Template)]
#[template(path = "dashboard_refund_confirm.html")]
struct ConfirmPage {
    layout: Layout,
    payment: Row,
    reference: String,
    amount: String,
    amount_shown: String,
    reason: String,
    idempotency_key: String,
    problem: Option<String>,
}

pub(super) async fn refund(
    req: HttpRequest,
    user: CurrentUser,
    session: Session,
    db: Db,
    state: State,
    path: web::Path<String>,
    form: web::Form<RefundForm>,
) -> Result<HttpResponse, AppError> {
    let (reference, visible, payment) = posted_about_payment(&session, &form.csrf_token, &db, user.0.id, &path).await?;
    let form = form.into_inner();
    let key_ok = !form.idempotency_key.is_empty() && form.idempotency_key.len() <= 100 && form.idempotency_key.bytes().all(|b| b.is_ascii_graphic());
    let amount = Money::parse(&form.amount, payment.currency);
    let reason = if form.reason.is_empty() { Ok(None) } else { RefundReason::parse(&form.reason).map(Some).ok_or(()) };
    let problem = match (&amount, &reason, key_ok) {
        (_, _, false) => Some("The form is missing its key; reload the payment and try again.".to_string()),
        (Err(e), _, _) => Some(format!("Amount: {e}.")),
        (_, Err(()), _) => Some("Choose a reason from the list.".to_string()),
        // Only while reviewing: on confirmation the reservation decides, and a second click of a
        // full refund must find the refund the first one made, not "nothing remains".
        (Ok(a), _, _) if form.confirm != "yes" && a.amount() > payment.remaining().amount() => {
            Some(format!("At most {} remains to refund.", payment.remaining()))
        }
        _ => None,
    };
    if problem.is_some() || form.confirm != "yes" {
        let status = if problem.is_some() { actix_web::http::StatusCode::BAD_REQUEST } else { actix_web::http::StatusCode::OK };
        let page = ConfirmPage {
            layout: Layout::new(&req),
            amount_shown: amount.as_ref().map(|a| a.to_string()).unwrap_or_default(),
            payment: Row::from(&payment),
            reference: reference.to_string(),
            amount: form.amount.trim().to_string(),
            reason: form.reason,
            idempotency_key: form.idempotency_key,
            problem,
        };
        let mut response = html(page)?;
        *response.status_mut() = status;
        return Ok(response);
    }
    let (user_id, attempts, now) = (user.0.id, state.refund_attempts, state.clock.now());
    let ask = service::RefundAsk {
        user_id,
        minor: amount.ok().map(|a| a.minor_units()),
        reason: reason.ok().flatten(),
        idempotency_key: format!("dashboard:{user_id}:{}", form.idempotency_key),
    };
    let made = db
        .run(move |conn| diesel::Connection::transaction(conn, |conn| service::refund(conn, &visible, reference, ask, attempts, now)))
        .await;
    let notice = match made {
        Ok((_, refund)) => {
            state.wake.notify();
            format!("Refund of {} requested.", refund.money())
        }
        Err(AppError::BadRequest(why)) => why,
        Err(other) => return Err(other),
    };
    Ok(see_other_with_notice(&req, &format!("/dashboard/payments/{reference}"), &notice))
}

/// A refund whose job died: sent again under the same gateway key (the gateway cannot make it
/// twice), or settled by hand with a written note — both go to the audit log.
pub(super) async fn settle_refund(
    req: HttpRequest,
    user: CurrentUser,
    session: Session,
    db: Db,
    state: State,
    path: web::Path<(String, String)>,
    form: web::Form<SettleForm>,
) -> Result<HttpResponse, AppError> {
    let (payment_ref, visible, payment) = posted_about_payment(&session, &form.csrf_token, &db, user.0.id, &path.0).await?;
    let refund_ref = REFUND.parse(&path.1).ok_or(AppError::NotFound)?;
    let form = form.into_inner();
    let note = form.checked_note()?;
    let (user_id, now, attempts) = (user.0.id, state.clock.now(), state.refund_attempts);
    // As for payments: only a refund whose job died may be sent again or settled by hand, and the
    // audit entry is written in the same transaction, only when something changed.
    let message = db
        .run(move |conn| {
            diesel::Connection::transaction(conn, |conn| {
                let refund = repo::refund_by_reference(conn, &visible, refund_ref)?.filter(|r| r.payment_id == payment.id);
                let refund = refund.ok_or(MerchantError::NotFound("refund"))?;
                let job = format!("{}:{}", crate::merchants::jobs::REFUND_PAYMENT, refund.id);
                if refund.status != refunds::PENDING || jobs::dead_unique_keys(conn, &[job])?.is_empty() {
                    return Ok("The refund is still being worked on, or already settled; nothing changed.".to_string());
                }
                let subject = format!("refund {}", refund.reference);
                let message = match form.action.as_str() {
                    "replay" => {
                        jobs::enqueue(conn, &refund_job(refund.id, attempts), now)?;
                        "The refund was sent again under its own key.".to_string()
                    }
                    "succeeded" | "failed" => {
                        let succeeded = (form.action == "succeeded").then(|| form.gateway_id.trim().to_string());
                        match refunds::settle_by_hand(conn, refund.id, succeeded, &note, now)? {
                            Some(r) => format!("The refund is now {}.", r.status),
                            None => return Ok("The refund was already settled; nothing changed.".to_string()),
                        }
                    }
                    _ => return Err(MerchantError::BadInput("Unknown action.".into())),
                };
                let action = if form.action == "replay" { "replay_refund".to_string() } else { format!("settle_refund_{}", form.action) };
                repo::audit(conn, Some(user_id), &action, &subject, &note)?;
                Ok::<_, MerchantError>(message)
            })
        })
        .await?;
    state.wake.notify();
    Ok(see_other_with_notice(&req, &format!("/dashboard/payments/{payment_ref}"), &message))
}

/// A refund's state for the payment page's script, which updates a pending refund in place (as
/// the shopper's payment page does) and reloads the page once it is settled.
pub(super) async fn refund_status(user: CurrentUser, db: Db, path: web::Path<(String, String)>) -> Result<HttpResponse, AppError> {
    let reference = parse_reference(&path.0)?;
    let refund_ref = REFUND.parse(&path.1).ok_or(AppError::NotFound)?;
    let (visible, payment) = visible_payment(&db, user.0.id, reference).await?;
    let refund = db
        .run(move |conn| repo::refund_by_reference(conn, &visible, refund_ref)?.filter(|r| r.payment_id == payment.id).ok_or(MerchantError::NotFound("refund")))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "word": refund.status, "final": refund.status != refunds::PENDING })))
}
