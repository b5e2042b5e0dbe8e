//! The home page (your orders), the checkout page and its Pay button.

use actix_session::Session;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use std::collections::HashMap;
use askama::Template;
use bigdecimal::BigDecimal;

use super::pipeline::{self, StartPaymentError};
use super::repo::{self, CheckoutLine, OrderSummary};
use super::{OrderError, OrdersState};
use crate::auth::{AdminUser, CurrentUser, SessionUser};
use crate::payments::{Currency, Money};
use crate::payments::{PayOrder, PaymentError};
use crate::web::{csrf, html, parse_id, see_other, see_other_with_notice, wants_json, AppError, Db, Layout};

pub struct OrderRow {
    pub id: i64,
    /// When it was placed (UTC), for the orders list.
    pub placed: String,
    pub merchant: String,
    pub total: String,
    pub status: String,
    pub payment_url: Option<String>,
}

impl From<OrderSummary> for OrderRow {
    fn from(s: OrderSummary) -> Self {
        OrderRow {
            id: s.order.id,
            placed: s.order.created_at.format("%Y-%m-%d %H:%M").to_string(),
            total: s.order.due().to_string(),
            status: s
                .payment_status
                .map(|p| format!("payment {}", crate::payments::domain::status_word(p, s.payment_retryable.unwrap_or(false))))
                .unwrap_or_else(|| s.order.status.clone()),
            merchant: s.merchant,
            payment_url: s.payment_reference.map(|r| format!("/payments/{r}")),
        }
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    layout: Layout,
    orders: Vec<OrderRow>,
}

async fn home(req: HttpRequest, db: Db) -> Result<HttpResponse, AppError> {
    let orders = match SessionUser::of(&req) {
        Some(user) => db.run(move |conn| repo::recent_for_user(conn, user.id, 50)).await?,
        None => Vec::new(),
    };
    html(HomePage { layout: Layout::new(&req), orders: orders.into_iter().map(OrderRow::from).collect() })
}

pub struct LineView {
    pub product: String,
    pub quantity: i32,
    pub unit_price: String,
    pub line_total: String,
}

#[derive(Template)]
#[template(path = "checkout.html")]
struct CheckoutPage {
    layout: Layout,
    order: OrderRow,
    lines: Vec<LineView>,
    payable: bool,
    /// Minutes the items stay reserved while unpaid.
    hold_minutes: u64,
    /// Expired, failed or cancelled: it can be ordered again.
    closed: bool,
    /// Why the person is looking at a closed order (they pressed Pay on it).
    notice: Option<String>,
    receipt: Option<ReceiptView>,
}

pub struct ReceiptView {
    pub number: String,
    pub paid: String,
    pub paid_at: String,
    pub refunded: Option<String>,
}

fn line_view(line: CheckoutLine, currency: Currency) -> LineView {
    let line_total = &line.unit_price * BigDecimal::from(line.quantity);
    LineView {
        unit_price: Money::stored(line.unit_price.clone(), currency).to_string(),
        line_total: Money::stored(line_total, currency).to_string(),
        product: line.product,
        quantity: line.quantity,
    }
}

async fn checkout(req: HttpRequest, user: CurrentUser, db: Db, state: web::Data<OrdersState>, path: web::Path<String>) -> Result<HttpResponse, AppError> {
    checkout_page(&req, &user, &db, &state, parse_id(&path)?, None).await
}

async fn checkout_page(req: &HttpRequest, user: &CurrentUser, db: &Db, state: &OrdersState, order_id: i64, notice: Option<String>) -> Result<HttpResponse, AppError> {
    let user_id = user.0.id;
    let (summary, lines, receipt) = db
        .run(move |conn| {
            let Some((summary, receipt)) = repo::find_summary(conn, user_id, order_id)? else {
                return Err(AppError::NotFound);
            };
            let lines = repo::lines(conn, order_id)?;
            Ok((summary, lines, receipt))
        })
        .await?;
    let receipt = receipt.map(|r| ReceiptView {
        // The payment's reference is the receipt number: unique, and what support can look up.
        number: r.reference.simple().to_string()[..12].to_uppercase(),
        paid: r.paid.to_string(),
        paid_at: r.paid_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        refunded: r.refunded.is_positive().then(|| r.refunded.to_string()),
    });
    let currency = summary.order.currency;
    let payable = summary.order.status == "pending" && summary.payment_reference.is_none();
    let closed = matches!(summary.order.status.as_str(), "expired" | "failed" | "cancelled");
    let status = if notice.is_some() { StatusCode::CONFLICT } else { StatusCode::OK };
    let mut response = html(CheckoutPage {
        layout: Layout::new(req),
        order: summary.into(),
        lines: lines.into_iter().map(|l| line_view(l, currency)).collect(),
        payable,
        hold_minutes: state.hold.as_secs().div_ceil(60),
        closed,
        notice,
        receipt,
    })?;
    *response.status_mut() = status;
    Ok(response)
}

/// Places a new order with the same items (at today's prices and stock) and opens its checkout.
async fn reorder(user: CurrentUser, session: Session, db: Db, state: web::Data<OrdersState>, path: web::Path<String>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let (order_id, user_id, max_unpaid) = (parse_id(&path)?, user.0.id, state.max_unpaid_orders);
    let placed = db
        .run(move |conn| {
            repo::find_summary(conn, user_id, order_id)?.ok_or(AppError::NotFound)?;
            let items = repo::items_of(conn, order_id)?;
            Ok::<_, AppError>(repo::create(conn, user_id, &items, max_unpaid)?)
        })
        .await?;
    Ok(see_other(&format!("/orders/{placed}/checkout")))
}

/// Starts paying: the payment and its charge job are created together, and the answer comes at
/// once; a worker charges the card. A full queue creates nothing and asks to come back later.
/// Only the token is read from the form: what is charged always comes from the order itself.
async fn pay(
    req: HttpRequest,
    user: CurrentUser,
    session: Session,
    db: Db,
    state: web::Data<OrdersState>,
    path: web::Path<String>,
    form: web::Form<csrf::TokenForm>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let order = PayOrder { user_id: user.0.id, order_id: parse_id(&path)? };
    let payment = match state.pay.pay(&db, order).await? {
        Ok(payment) => payment,
        // Not payable: if it is the person's order and it closed (expired while unpaid, or its
        // payment failed), say so and offer to order the same again, rather than "not found".
        Err(StartPaymentError::Payment(PaymentError::OrderNotFound)) => {
            let notice = "This order can no longer be paid: unpaid orders hold their items only for a while, \
                          then give them back. No money was taken. You can order the same items again."
                .to_string();
            return checkout_page(&req, &user, &db, &state, order.order_id, Some(notice)).await;
        }
        Err(StartPaymentError::Payment(e)) => return Err(e.into()),
        Err(StartPaymentError::Full(_)) => {
            let retry_after = 10;
            if wants_json(&req) {
                return Ok(HttpResponse::ServiceUnavailable()
                    .insert_header((header::RETRY_AFTER, retry_after.to_string()))
                    .json(serde_json::json!({ "error": { "code": "queue_full", "message": "too many payments queued; nothing was created", "retry_after": retry_after } })));
            }
            return Err(AppError::Busy { retry_after });
        }
    };
    state.wake.notify();
    Ok(see_other(&format!("/payments/{}", payment.reference)))
}

pub struct ProductView {
    pub id: i64,
    pub name: String,
    pub price: String,
    pub stock: i32,
    /// The quantity in the form: 0, or what the person asked for before a refusal.
    pub quantity: String,
}

pub struct MerchantView {
    pub name: String,
    pub products: Vec<ProductView>,
}

#[derive(Template)]
#[template(path = "products.html")]
struct ProductsPage {
    layout: Layout,
    merchants: Vec<MerchantView>,
    problem: Option<String>,
}

/// The catalogue by merchant, each quantity as the person last asked (`asked`, by field name), so
/// a refused order comes back with what they typed.
fn merchants(rows: Vec<repo::ProductRow>, asked: &HashMap<String, String>) -> Vec<MerchantView> {
    let mut out: Vec<MerchantView> = Vec::new();
    for row in rows {
        let quantity = asked.get(&format!("qty_{}", row.id)).map(|q| q.trim().to_string()).filter(|q| q.len() <= 4 && q.bytes().all(|b| b.is_ascii_digit())).unwrap_or_else(|| "0".into());
        let product = ProductView { id: row.id, price: Money::stored(row.price.clone(), row.currency).to_string(), name: row.name, stock: row.stock, quantity };
        match out.last_mut() {
            Some(m) if m.name == row.merchant => m.products.push(product),
            _ => out.push(MerchantView { name: row.merchant, products: vec![product] }),
        }
    }
    out
}

/// The catalogue, for anyone: browsing needs no account; ordering does. Quantities in the address
/// (`?qty_3=2`, as "Sign in to order" carries them through the sign-in) are filled in.
async fn products(req: HttpRequest, db: Db, asked: web::Query<HashMap<String, String>>) -> Result<HttpResponse, AppError> {
    let rows = db.run(repo::catalogue).await?;
    // The same for every visitor (stock changes the bytes, and so the ETag).
    html(ProductsPage { layout: Layout::new(&req), merchants: merchants(rows, &asked), problem: None }).map(crate::web::caching::public)
}

/// "Sign in to order" with quantities chosen: the sign-in comes back to the catalogue with them
/// filled in, so nothing a visitor picked is lost on the way.
async fn sign_in_to_order(req: HttpRequest, asked: web::Query<HashMap<String, String>>) -> HttpResponse {
    let mut kept: Vec<(String, String)> = asked
        .iter()
        .filter(|(field, value)| {
            field.strip_prefix("qty_").and_then(canonical_id).is_some()
                && !value.is_empty()
                && value.len() <= 4
                && value.bytes().all(|b| b.is_ascii_digit())
                && value.trim_start_matches('0') != ""
        })
        .map(|(f, v)| (f.clone(), v.clone()))
        .collect();
    kept.sort();
    let back = if kept.is_empty() { "/products".to_string() } else { format!("/products?{}", serde_urlencoded::to_string(&kept).unwrap_or_default()) };
    if crate::auth::SessionUser::of(&req).is_some() {
        return see_other(&back);
    }
    see_other(&format!("/login?next={}", crate::web::url_encode(&back)))
}

/// A product id as the catalogue writes it: digits, no sign, no leading zero.
fn canonical_id(raw: &str) -> Option<i64> {
    let canonical = !raw.is_empty() && !raw.starts_with('0') && raw.bytes().all(|b| b.is_ascii_digit());
    canonical.then(|| raw.parse::<i64>().ok()).flatten()
}

/// The quantities asked for, from fields named exactly `qty_<product id>`; blanks and zeros are
/// skipped. `qty_01` or `qty_+1` are refused: otherwise one product could be named many ways and
/// its quantity counted past the per-item cap.
fn basket(form: &HashMap<String, String>) -> Result<Vec<(i64, i32)>, AppError> {
    let mut items = Vec::new();
    for (field, value) in form {
        let Some(id) = field.strip_prefix("qty_") else { continue };
        let value = value.trim();
        if value.is_empty() || value == "0" {
            continue;
        }
        let id = canonical_id(id).ok_or_else(|| AppError::BadRequest("The form names a product that does not exist.".into()))?;
        let quantity = Some(value)
            .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|q| (1..=1000).contains(q))
            .ok_or_else(|| AppError::BadRequest(format!("{value:?} is not a quantity between 1 and 1000.")))?;
        items.push((id, quantity));
    }
    items.sort();
    Ok(items)
}

async fn place_order(
    req: HttpRequest,
    user: CurrentUser,
    session: Session,
    db: Db,
    state: web::Data<OrdersState>,
    form: web::Form<HashMap<String, String>>,
) -> Result<HttpResponse, AppError> {
    let (user_id, max_unpaid) = (user.0.id, state.max_unpaid_orders);
    let problem = if csrf::verify(&session, form.get("csrf_token").map(String::as_str).unwrap_or("")).is_err() {
        // A catalogue open from an earlier sign-in: the quantities come back with a fresh token.
        "This page was open from an earlier sign-in, so for your safety nothing was ordered yet. Your quantities are kept: check them and place the order again.".to_string()
    } else {
        match basket(&form) {
            Ok(items) if items.is_empty() => "Choose at least one item.".to_string(),
            Ok(items) => match db.run(move |conn| Ok::<_, AppError>(repo::create(conn, user_id, &items, max_unpaid))).await? {
                Ok(order_id) => return Ok(see_other(&format!("/orders/{order_id}/checkout"))),
                Err(OrderError::Database(e)) => return Err(e.into()),
                Err(e @ OrderError::OutOfStock { .. }) => format!("Sorry: {e}. Nothing was reserved; adjust the quantity and try again."),
                Err(e @ OrderError::TooManyUnpaid { .. }) => format!("Sorry: {e}. Your unpaid orders are listed on your home page."),
                Err(e) => format!("{e}."),
            },
            Err(AppError::BadRequest(why)) => why,
            Err(other) => return Err(other),
        }
    };
    let rows = db.run(repo::catalogue).await?;
    let page = ProductsPage { layout: Layout::new(&req), merchants: merchants(rows, &form), problem: Some(problem) };
    Ok(HttpResponse::Conflict().content_type("text/html; charset=utf-8").body(page.render()?))
}

/// An administrator asks the gateway about an unconfirmed payment now, instead of at its next
/// scheduled check; a worker does the asking.
async fn check_payment_now(
    req: HttpRequest,
    _admin: AdminUser,
    session: Session,
    db: Db,
    state: web::Data<OrdersState>,
    path: web::Path<String>,
    form: web::Form<csrf::TokenForm>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let reference = uuid::Uuid::parse_str(&path).map_err(|_| AppError::NotFound)?;
    let now = state.clock.now();
    let notice = db
        .run(move |conn| {
            let payment = crate::payments::repo::find_by_reference(conn, reference)?.ok_or(AppError::NotFound)?;
            if payment.status != crate::payments::PaymentStatus::RequiresConfirmation {
                return Ok::<_, AppError>("That payment is no longer awaiting confirmation.");
            }
            crate::jobs::enqueue(conn, &pipeline::confirm_job(payment.id), now)?;
            Ok("The gateway will be asked about that payment in a moment.")
        })
        .await?;
    state.wake.notify();
    Ok(see_other_with_notice(&req, "/admin/payments", notice))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(home))
        .route("/orders/{id}", web::get().to(checkout))
        .route("/orders/{id}/checkout", web::get().to(checkout))
        .route("/orders/{id}/pay", web::post().to(pay))
        .route("/orders/{id}/reorder", web::post().to(reorder))
        .route("/products", web::get().to(products))
        .route("/orders", web::post().to(place_order))
        .route("/products/sign-in", web::get().to(sign_in_to_order))
        // A reload after a refused order lands here: the orders are on the home page.
        .route("/orders", web::get().to(|| async { see_other("/") }))
        .route("/admin/payments/{reference}/check", web::post().to(check_payment_now));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &str)]) -> HashMap<String, String> {
        fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_product_has_one_name_in_the_form() {
        assert_eq!(basket(&form(&[("qty_1", "2"), ("qty_12", ""), ("csrf_token", "x")])).unwrap(), vec![(1, 2)]);
        for field in ["qty_01", "qty_+1", "qty_-1", "qty_1.0", "qty_", "qty_ 1", "qty_0"] {
            assert!(basket(&form(&[(field, "1")])).is_err(), "{field}");
        }
        assert!(basket(&form(&[("qty_1", "+1")])).is_err());
        assert!(basket(&form(&[("qty_1", "1001")])).is_err());
    }
}
