//! The merchants' dashboard: server-rendered pages, usable without JavaScript, every filter in the
//! URL (a view can be bookmarked and shared), the same visibility as the API — what the user's
//! links do not reach is "not found".

mod balances;
mod csv;
mod customers;
mod duplicates;
mod payments;
mod refunds;

use actix_web::web;
use serde::Deserialize;
use uuid::Uuid;

use super::error::ApiError;
use super::ids::Linked;
use super::repo::{self, PaymentRow};
use super::{service, MerchantError, MerchantsState};
use crate::web::{see_other, AppError, Db};

pub use csv::CSV_HEADER;

type State = web::Data<MerchantsState>;

/// A filter or cursor the page cannot use: not found, or the complaint shown.
pub(super) fn bad_filter(e: ApiError) -> AppError {
    MerchantError::Request(e).into()
}

/// The dashboard is for a merchant's staff and for administrators: to anyone else it does not
/// exist (rather than an empty merchant's page).
pub(super) fn staff_only(linked: &Linked, is_admin: bool) -> Result<(), MerchantError> {
    if linked.ids.is_empty() && !is_admin {
        return Err(MerchantError::NotFound("dashboard"));
    }
    Ok(())
}

pub(super) async fn links_of(db: &Db, user_id: i64) -> Result<Linked, AppError> {
    db.run(move |conn| repo::links(conn, user_id)).await
}

/// A URL's query with one parameter set (or removed), the rest kept in order.
pub(super) fn with_param(query: &str, name: &str, value: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    pairs.retain(|(n, v)| n != name && !v.is_empty());
    if let Some(value) = value {
        pairs.push((name.to_string(), value.to_string()));
    }
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

pub struct Row {
    pub reference: String,
    pub created: String,
    pub customer: String,
    pub user: String,
    pub amount: String,
    pub refunded: String,
    /// In the merchant's words ("partially refunded", "retrying").
    pub status: String,
    /// For the badge's style: the state's code.
    pub status_class: &'static str,
}

impl From<&PaymentRow> for Row {
    fn from(p: &PaymentRow) -> Row {
        Row {
            reference: p.reference.to_string(),
            created: p.created_at.format("%Y-%m-%d %H:%M").to_string(),
            customer: p.customer_name.clone(),
            user: p.user_email.clone(),
            amount: p.money().to_string(),
            refunded: if p.refunded().is_positive() { p.refunded().to_string() } else { String::new() },
            status: p.state_words(),
            status_class: if p.status == crate::payments::PaymentStatus::Failed && p.retryable { "retrying" } else { p.state() },
        }
    }
}

pub(super) fn parse_reference(raw: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(raw).map_err(|_| AppError::NotFound)
}

/// A visible payment, or not found.
pub(super) async fn visible_payment(db: &Db, user_id: i64, reference: Uuid) -> Result<(Vec<i64>, PaymentRow), AppError> {
    db.run(move |conn| {
        let visible = repo::links(conn, user_id)?.ids;
        let payment = service::payment(conn, &visible, reference)?;
        Ok::<_, MerchantError>((visible, payment))
    })
    .await
}

/// A form posted about a payment: its token checked, then the payment read if the signed-in
/// user may see it (else not found). The payment's reference, the user's links and the payment.
pub(super) async fn posted_about_payment(session: &actix_session::Session, token: &str, db: &Db, user_id: i64, raw: &str) -> Result<(Uuid, Vec<i64>, PaymentRow), AppError> {
    crate::web::csrf::verify(session, token)?;
    let reference = parse_reference(raw)?;
    let (visible, payment) = visible_payment(db, user_id, reference).await?;
    Ok((reference, visible, payment))
}

#[derive(Deserialize)]
pub(super) struct SettleForm {
    #[serde(default)]
    pub csrf_token: String,
    /// `replay`, `succeeded` or `failed`.
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub gateway_id: String,
    #[serde(default)]
    pub note: String,
}

impl SettleForm {
    /// The operator's note: required to settle by hand (with the gateway's id when it succeeded).
    pub(super) fn checked_note(&self) -> Result<String, AppError> {
        let note = self.note.trim().to_string();
        if self.action != "replay" && note.is_empty() {
            return Err(AppError::BadRequest("Settling by hand needs a note saying what the gateway told you.".into()));
        }
        if self.action == "succeeded" && self.gateway_id.trim().is_empty() {
            return Err(AppError::BadRequest("Settling as done needs the gateway's id for it.".into()));
        }
        Ok(note)
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard", web::get().to(|| async { see_other("/dashboard/payments") }))
        .route("/dashboard/payments", web::get().to(payments::payments_index))
        .route("/dashboard/payments.csv", web::get().to(csv::payments_csv))
        .route("/dashboard/payments/{id}", web::get().to(payments::payment_detail))
        .route("/dashboard/payments/{id}/refunds", web::post().to(refunds::refund))
        .route("/dashboard/payments/{id}/refunds/{refund}", web::post().to(refunds::settle_refund))
        .route("/dashboard/payments/{id}/refunds/{refund}/status", web::get().to(refunds::refund_status))
        .route("/dashboard/payments/{id}/settle", web::post().to(payments::settle_payment))
        .route("/dashboard/balances", web::get().to(balances::balances))
        .route("/dashboard/balances/{customer_id}", web::get().to(balances::ledger))
        .route("/dashboard/customers", web::get().to(customers::customers_index))
        .route("/dashboard/customers", web::post().to(customers::create_customer))
        .route("/dashboard/customers/{id}", web::post().to(customers::edit_customer))
        .route("/dashboard/customers/{id}/users", web::post().to(customers::link_user))
        .route("/dashboard/customers/{id}/users/{user_id}/remove", web::post().to(customers::unlink_user))
        .route("/dashboard/invariants/check", web::post().to(payments::check_now))
        .route("/dashboard/duplicates", web::get().to(duplicates::duplicates))
        .route("/dashboard/duplicates/{first}/dismiss", web::post().to(duplicates::dismiss));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_filters_and_move_the_cursor() {
        let q = "status=completed&starting_after=abc&from=";
        assert_eq!(with_param(q, "starting_after", Some("def")), "status=completed&starting_after=def");
        assert_eq!(with_param(q, "starting_after", None), "status=completed");
    }
}
