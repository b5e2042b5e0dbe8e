//! Balances per merchant and currency, and each merchant's ledger.

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::merchants::repo;
use crate::auth::CurrentUser;
use crate::merchants::domain::{Cursor, ListParams};
use crate::merchants::ids::{BALANCE_TRANSACTION, CUSTOMER};
use crate::merchants::{service, MerchantError};
use crate::web::{html, AppError, Db, Layout};

const LEDGER_PAGE: i64 = 100;

pub struct BalanceView {
    /// The id the merchant is known by (`cus_…`).
    pub customer_id: String,
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
    let (user_id, admin) = (user.0.id, user.0.is_admin);
    let (customers, balances) = db
        .run(move |conn| {
            let linked = repo::links(conn, user_id)?;
            super::staff_only(&linked, admin)?;
            let ids = linked.ids;
            Ok::<_, MerchantError>((service::customers(conn, &ids)?, service::balances(conn, &ids)?))
        })
        .await?;
    let balances = customers
        .into_iter()
        .map(|c| BalanceView {
            amounts: balances.iter().filter(|b| b.customer_id == c.id).map(|b| b.money().to_string()).collect(),
            customer_id: CUSTOMER.show(c.public_id),
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
    starting_after: Option<String>,
}

pub(super) async fn ledger(req: HttpRequest, user: CurrentUser, db: Db, path: web::Path<String>, query: web::Query<LedgerQuery>) -> Result<HttpResponse, AppError> {
    let params = ListParams { limit: LEDGER_PAGE, cursor: query.into_inner().starting_after.map(Cursor::After) };
    let (user_id, raw) = (user.0.id, path.to_string());
    let (customer, balances, entries, has_more) = db
        .run(move |conn| {
            let visible = repo::links(conn, user_id)?;
            let customer_id = visible.find(&raw).ok_or(MerchantError::NotFound("customer"))?;
            let ids = visible.ids;
            let customer = service::customer_alone(conn, &ids, customer_id)?;
            let (balances, entries, has_more) = service::ledger_page(conn, &ids, customer_id, &params)?;
            Ok::<_, MerchantError>((customer, balances, entries, has_more))
        })
        .await?;
    let older = has_more
        .then(|| entries.last().map(|e| format!("/dashboard/balances/{}?starting_after={}", path.as_str(), BALANCE_TRANSACTION.show(e.public_id))))
        .flatten();
    let page = LedgerPage {
        layout: Layout::new(&req),
        customer: customer.name,
        amounts: balances.iter().map(|b| b.money().to_string()).collect(),
        entries: entries
            .into_iter()
            .map(|e| EntryView {
                kind: e.kind.replace('_', " "),
                amount: e.money().to_string(),
                source: e.source.to_string(),
                created: e.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            })
            .collect(),
        older,
    };
    html(page)
}
