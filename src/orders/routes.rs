//! The home page (your orders), the checkout page and its Pay button.

use actix_session::Session;
use actix_web::{web, HttpResponse};
use askama::Template;
use bigdecimal::BigDecimal;
use serde::Deserialize;

use super::repo::{self, CheckoutLine, OrderSummary};
use crate::auth::{CurrentUser, SessionUser};
use crate::payments::domain::format_money;
use crate::payments::PayOrder;
use crate::web::{csrf, html, parse_id, see_other, AppError, AppState, Db, Layout};

pub struct OrderRow {
    pub id: i64,
    pub merchant: String,
    pub total: String,
    pub status: String,
    pub payment_url: Option<String>,
}

impl From<OrderSummary> for OrderRow {
    fn from(s: OrderSummary) -> Self {
        OrderRow {
            id: s.order.id,
            total: format_money(&s.order.total, &s.order.currency),
            status: s.payment_status.map(|p| format!("payment {p}")).unwrap_or_else(|| s.order.status.clone()),
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

async fn home(session: Session, db: Db) -> Result<HttpResponse, AppError> {
    let orders = match SessionUser::from_session(&session) {
        Some(user) => db.run(move |conn| repo::recent_for_user(conn, user.id, 50)).await?,
        None => Vec::new(),
    };
    html(HomePage { layout: Layout::new(&session), orders: orders.into_iter().map(OrderRow::from).collect() })
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
}

fn line_view(line: CheckoutLine, currency: &str) -> LineView {
    let line_total = &line.unit_price * BigDecimal::from(line.quantity);
    LineView {
        unit_price: format_money(&line.unit_price, currency),
        line_total: format_money(&line_total, currency),
        product: line.product,
        quantity: line.quantity,
    }
}

async fn checkout(user: CurrentUser, session: Session, db: Db, path: web::Path<String>) -> Result<HttpResponse, AppError> {
    let order_id = parse_id(&path)?;
    let user_id = user.0.id;
    let (summary, lines) = db
        .run(move |conn| {
            let Some(summary) = repo::find_summary(conn, user_id, order_id)? else {
                return Err(AppError::NotFound);
            };
            let lines = repo::lines(conn, order_id)?;
            Ok((summary, lines))
        })
        .await?;
    let currency = summary.order.currency.clone();
    let payable = summary.order.status == "pending" && summary.payment_reference.is_none();
    html(CheckoutPage {
        layout: Layout::new(&session),
        order: summary.into(),
        lines: lines.into_iter().map(|l| line_view(l, &currency)).collect(),
        payable,
    })
}

/// Only the token is read from the form: what is charged always comes from the order itself.
#[derive(Deserialize)]
struct PayForm {
    #[serde(default)]
    csrf_token: String,
}

async fn pay(
    user: CurrentUser,
    session: Session,
    db: Db,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<PayForm>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let order = PayOrder { user_id: user.0.id, order_id: parse_id(&path)? };
    let processor = state.processor.clone();
    let payment = db.run(move |conn| processor.process(conn, order)).await?;
    Ok(see_other(&format!("/payments/{}", payment.reference)))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(home))
        .route("/orders/{id}/checkout", web::get().to(checkout))
        .route("/orders/{id}/pay", web::post().to(pay));
}
