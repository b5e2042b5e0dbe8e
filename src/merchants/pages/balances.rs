//! Balances per merchant and currency, and each merchant's ledger.

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::merchants::repo::{self};
use crate::merchants::MerchantError;
use crate::auth::CurrentUser;
use crate::payments::domain::format_money;
use crate::web::{html, AppError, Db, Layout};

pub struct BalanceView {
    pub customer_id: i64,
    pub customer: String,
    pub amounts: Vec<String>,
}

#[derive(Template)]
#[template(path = "dashboard_balances.html")]
struct BalancesPage {
    layout: Layout,
    balances: Vec<BalanceView>,
}

pub(super) async fn balances(req: HttpRequest, user: CurrentUser, db: Db) -> Result<HttpResponse, AppError> {
    let user_id = user.0.id;
    let (customers, balances) = db
        .run(move |conn| {
            let visible = repo::links(conn, user_id)?;
            Ok::<_, diesel::result::Error>((repo::customers(conn, &visible)?, repo::balances(conn, &visible)?))
        })
        .await?;
    let balances = customers
        .into_iter()
        .map(|c| BalanceView {
            amounts: balances.iter().filter(|b| b.customer_id == c.id).map(|b| format_money(&b.available, &b.currency)).collect(),
            customer_id: c.id,
            customer: c.name,
        })
        .collect();
    html(BalancesPage { layout: Layout::new(&req), balances })
}

pub struct EntryView {
    pub kind: String,
    pub amount: String,
    pub source: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "dashboard_ledger.html")]
struct LedgerPage {
    layout: Layout,
    customer: String,
    amounts: Vec<String>,
    entries: Vec<EntryView>,
    older: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct LedgerQuery {
    starting_after: Option<i64>,
}

pub(super) async fn ledger(req: HttpRequest, user: CurrentUser, db: Db, path: web::Path<String>, query: web::Query<LedgerQuery>) -> Result<HttpResponse, AppError> {
    let customer_id = crate::web::parse_id(&path)?;
    let (user_id, after) = (user.0.id, query.starting_after);
    let (customer, balances, mut entries) = db
        .run(move |conn| {
            if !repo::links(conn, user_id)?.contains(&customer_id) {
                return Err(MerchantError::NotFound("customer"));
            }
            let customer = repo::customer(conn, customer_id)?.ok_or(MerchantError::NotFound("customer"))?;
            Ok((customer, repo::balances(conn, &[customer_id])?, repo::ledger_page(conn, customer_id, after, None, 100)?))
        })
        .await?;
    let older = (entries.len() > 100).then(|| {
        entries.truncate(100);
        format!("/dashboard/balances/{customer_id}?starting_after={}", entries.last().map(|e| e.id).unwrap_or_default())
    });
    let page = LedgerPage {
        layout: Layout::new(&req),
        customer: customer.name,
        amounts: balances.iter().map(|b| format_money(&b.available, &b.currency)).collect(),
        entries: entries
            .into_iter()
            .map(|e| EntryView {
                kind: e.kind.replace('_', " "),
                amount: format_money(&e.amount, &e.currency),
                source: e.source.to_string(),
                created: e.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            })
            .collect(),
        older,
    };
    html(page)
}
