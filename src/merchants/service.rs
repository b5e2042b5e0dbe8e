//! What the merchants' two faces do, once: the dashboard's pages and the JSON API are thin callers
//! of these functions, which take the caller's visible customers (their links, read on every
//! request) and never reach past them. Each runs on the caller's connection, inside the caller's
//! transaction where it writes.

use chrono::{DateTime, Utc};
use diesel::PgConnection;
use uuid::Uuid;

use super::domain::{Cursor, ListParams, PaymentFilter};
use super::error::ApiError;
use super::ids::{self, Linked};
use super::jobs::refund_job;
use super::repo::{self, Balance, Customer, DailyVolume, DoubleCharge, InvariantCheck, Keyset, LedgerEntry, LinkedUser, PaymentRow};
use super::MerchantError;
use crate::jobs;
use crate::payments::Money;
use crate::payments::refunds::{self, NewRefund, Refund, RefundReason};

/// A cursor that does not name an object of this list: 404 `resource_missing`, with its `param`
/// (as any id the caller cannot see).
fn unknown_cursor(what: &str, param: &str) -> MerchantError {
    MerchantError::Request(ApiError::missing_resource(what, Some(param)))
}

/// Trims a `limit + 1` page to `limit` and says whether more lie beyond it: for a page walked
/// backwards (`ending_before`) the extra row is the newest, at the front.
pub fn trim<T>(mut rows: Vec<T>, params: &ListParams) -> (Vec<T>, bool) {
    let has_more = rows.len() as i64 > params.limit;
    if has_more {
        match params.cursor {
            Some(Cursor::Before(_)) => {
                rows.remove(0);
            }
            _ => rows.truncate(params.limit as usize),
        }
    }
    (rows, has_more)
}

// --- payments -----------------------------------------------------------------------------------

/// The customers a filter reaches: the one it names if the caller sees it (else 404 with
/// `param`, whether it is malformed, unknown or someone else's), or all the caller sees.
pub fn visible_scope(linked: &Linked, filter: &PaymentFilter) -> Result<Vec<i64>, MerchantError> {
    match &filter.customer {
        Some(raw) => linked.find(raw).map(|id| vec![id]).ok_or_else(|| MerchantError::Request(ApiError::missing_resource("customer", Some("customer")))),
        None => Ok(linked.ids.clone()),
    }
}

/// A page of the visible payments the filter matches, newest first: the rows (at most `limit`)
/// and whether more lie beyond them.
pub fn payments_page(conn: &mut PgConnection, linked: &Linked, filter: &PaymentFilter, params: &ListParams) -> Result<(Vec<PaymentRow>, bool), MerchantError> {
    let scope = visible_scope(linked, filter)?;
    let visible = &linked.ids;
    let mut position = |raw: &str, param: &str| -> Result<(DateTime<Utc>, i64), MerchantError> {
        let found = match Uuid::parse_str(raw) {
            Ok(reference) => repo::payment_position(conn, visible, reference)?,
            Err(_) => None,
        };
        found.ok_or_else(|| unknown_cursor("payment", param))
    };
    let from = match &params.cursor {
        Some(Cursor::After(raw)) => Some(position(raw, "starting_after").map(|(at, id)| Keyset::After(at, id))?),
        Some(Cursor::Before(raw)) => Some(position(raw, "ending_before").map(|(at, id)| Keyset::Before(at, id))?),
        None => None,
    };
    let rows = repo::payments_page(conn, &scope, filter, from, params.limit + 1)?;
    Ok(trim(rows, params))
}

/// What the dashboard's payments page shows: a page of payments, the daily volume and the
/// customers of the filtered set, the last check of the money invariants, and suspected double
/// charges since `since`.
pub struct Overview {
    pub rows: Vec<PaymentRow>,
    pub has_more: bool,
    pub volume: Vec<DailyVolume>,
    pub customers: Vec<Customer>,
    pub check: Option<InvariantCheck>,
    pub suspects: Vec<DoubleCharge>,
}

pub fn overview(conn: &mut PgConnection, linked: &Linked, filter: &PaymentFilter, params: &ListParams, since: DateTime<Utc>) -> Result<Overview, MerchantError> {
    let scope = visible_scope(linked, filter)?;
    let (rows, has_more) = payments_page(conn, linked, filter, params)?;
    Ok(Overview {
        rows,
        has_more,
        volume: repo::daily_volume(conn, &scope, filter)?,
        customers: repo::customers(conn, &linked.ids)?,
        check: repo::last_check(conn)?,
        suspects: repo::double_charges(conn, &scope, 5, since)?,
    })
}

/// A visible payment, or not found.
pub fn payment(conn: &mut PgConnection, visible: &[i64], reference: Uuid) -> Result<PaymentRow, MerchantError> {
    repo::payment(conn, visible, reference)?.ok_or(MerchantError::NotFound("payment"))
}

// --- refunds ------------------------------------------------------------------------------------

/// A refund as either face asks for it, before its payment is read.
pub struct RefundAsk {
    pub user_id: i64,
    /// Minor units of the payment's currency; `None`: all that remains.
    pub minor: Option<i64>,
    pub reason: Option<RefundReason>,
    /// Already scoped to its requester (`api:7:…`, `dashboard:7:…`).
    pub idempotency_key: String,
}

/// Refunds a visible payment (in part or in full): reserved, and its job enqueued, in the
/// caller's transaction.
pub fn refund(conn: &mut PgConnection, visible: &[i64], reference: Uuid, ask: RefundAsk, attempts: i32, now: DateTime<Utc>) -> Result<(PaymentRow, Refund), MerchantError> {
    let payment = payment(conn, visible, reference)?;
    let RefundAsk { user_id, minor, reason, idempotency_key } = ask;
    let amount = minor.map(|units| Money::from_minor(units, payment.currency));
    let (refund, created) = refunds::reserve(conn, &NewRefund { payment_id: payment.id, user_id, amount, reason, idempotency_key }, now)?;
    if created {
        jobs::enqueue(conn, &refund_job(refund.id, attempts), now)?;
    }
    Ok((payment, refund))
}

/// A visible payment's refunds, oldest first.
pub fn refunds_of(conn: &mut PgConnection, visible: &[i64], reference: Uuid) -> Result<(PaymentRow, Vec<Refund>), MerchantError> {
    let payment = payment(conn, visible, reference)?;
    let all = refunds::for_payment(conn, payment.id)?;
    Ok((payment, all))
}

// --- customers and their staff ------------------------------------------------------------------

fn visible_customer(visible: &[i64], id: i64) -> Result<i64, MerchantError> {
    visible.contains(&id).then_some(id).ok_or(MerchantError::NotFound("customer"))
}

/// These (visible) customers.
pub fn customers(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<Customer>, MerchantError> {
    Ok(repo::customers(conn, ids)?)
}

/// Customers with the users linked to each.
pub fn customers_with_users(conn: &mut PgConnection, ids: &[i64]) -> Result<(Vec<Customer>, Vec<LinkedUser>), MerchantError> {
    Ok((repo::customers(conn, ids)?, repo::linked_users(conn, ids)?))
}

/// A page of the visible customers, newest first (keyset on their ids).
pub fn customers_page(conn: &mut PgConnection, linked: &Linked, params: &ListParams) -> Result<(Vec<Customer>, Vec<LinkedUser>, bool), MerchantError> {
    let visible = &linked.ids;
    let cursor = |raw: &str, param: &str| linked.find(raw).ok_or_else(|| unknown_cursor("object", param));
    let (after, before) = match &params.cursor {
        Some(Cursor::After(raw)) => (Some(cursor(raw, "starting_after")?), None),
        Some(Cursor::Before(raw)) => (None, Some(cursor(raw, "ending_before")?)),
        None => (None, None),
    };
    let (customers, has_more) = trim(repo::customers_page(conn, visible, after, before, params.limit)?, params);
    let ids: Vec<i64> = customers.iter().map(|c| c.id).collect();
    Ok((customers, repo::linked_users(conn, &ids)?, has_more))
}

/// A visible customer.
pub fn customer_alone(conn: &mut PgConnection, visible: &[i64], id: i64) -> Result<Customer, MerchantError> {
    let id = visible_customer(visible, id)?;
    repo::customer(conn, id)?.ok_or(MerchantError::NotFound("customer"))
}

/// A visible customer with its linked users.
pub fn customer(conn: &mut PgConnection, visible: &[i64], id: i64) -> Result<(Customer, Vec<LinkedUser>), MerchantError> {
    let customer = customer_alone(conn, visible, id)?;
    let users = repo::linked_users(conn, &[customer.id])?;
    Ok((customer, users))
}

/// A new customer, with its creator linked to it.
pub fn create_customer(conn: &mut PgConnection, by: i64, name: &str, country: Option<&str>) -> Result<Customer, MerchantError> {
    Ok(repo::create_customer(conn, by, name, country)?)
}

/// Renames a visible customer or changes its country (`Some(None)` clears it).
pub fn update_customer(conn: &mut PgConnection, visible: &[i64], id: i64, name: Option<&str>, country: Option<Option<&str>>) -> Result<Customer, MerchantError> {
    let id = visible_customer(visible, id)?;
    Ok(repo::update_customer(conn, id, name, country)?)
}

/// Links the user with this email to a visible customer (again is no change), audited.
pub fn link_user(conn: &mut PgConnection, visible: &[i64], id: i64, email: &str, by: i64) -> Result<(), MerchantError> {
    let id = visible_customer(visible, id)?;
    repo::link_user(conn, id, email, by)
}

/// Unlinks a user (`usr_…`) from a visible customer, audited; its last linked user stays.
pub fn unlink_user(conn: &mut PgConnection, visible: &[i64], id: i64, user: &str, by: i64) -> Result<(), MerchantError> {
    let id = visible_customer(visible, id)?;
    let user = ids::USER.parse(user).map(|u| repo::user_key(conn, u)).transpose()?.flatten().ok_or(MerchantError::NotFound("user"))?;
    repo::unlink_user(conn, id, user, by)
}

// --- balances and ledgers -----------------------------------------------------------------------

/// The balances of these (visible) customers, per currency.
pub fn balances(conn: &mut PgConnection, visible: &[i64]) -> Result<Vec<Balance>, MerchantError> {
    Ok(repo::balances(conn, visible)?)
}

/// A page of a visible customer's ledger, newest first, with its balances: `limit` entries and
/// whether more lie beyond them.
pub fn ledger_page(conn: &mut PgConnection, visible: &[i64], id: i64, params: &ListParams) -> Result<(Vec<Balance>, Vec<LedgerEntry>, bool), MerchantError> {
    let id = visible_customer(visible, id)?;
    let mut in_ledger = |raw: &str, param: &str| -> Result<i64, MerchantError> {
        let entry = match ids::BALANCE_TRANSACTION.parse(raw) {
            Some(public) => repo::ledger_entry(conn, public)?,
            None => None,
        };
        entry.filter(|(_, owner)| *owner == id).map(|(key, _)| key).ok_or_else(|| unknown_cursor("object", param))
    };
    let (after, before) = match &params.cursor {
        Some(Cursor::After(raw)) => (Some(in_ledger(raw, "starting_after")?), None),
        Some(Cursor::Before(raw)) => (None, Some(in_ledger(raw, "ending_before")?)),
        None => (None, None),
    };
    let (entries, has_more) = trim(repo::ledger_page(conn, id, after, before, params.limit)?, params);
    Ok((repo::balances(conn, &[id])?, entries, has_more))
}
