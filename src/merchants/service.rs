//! What the merchants' two faces do, once: the dashboard's pages and the JSON API are thin callers
//! of these functions, which take the caller's visible customers (their links, read on every
//! request) and never reach past them. Each runs on the caller's connection, inside the caller's
//! transaction where it writes.

use chrono::{DateTime, Utc};
use diesel::{Connection, PgConnection};
use uuid::Uuid;

use super::domain::{Cursor, ListParams, PaymentFilter, Role};
use super::error::ApiError;
use super::ids::{self, Linked};
use super::jobs::refund_job;
use super::repo::{self, Balance, Customer, DailyVolume, DuplicateGroup, Keyset, LedgerEntry, LinkedUser, PaymentRow};
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
    pub check: Option<MoneyChecks>,
    /// Unresolved suspected double charges since `since`, oldest first (one more than shown, to
    /// say there are more).
    pub suspects: Vec<DuplicateGroup>,
}

/// The last run of the money checks as one viewer may see it: an administrator, across the
/// platform; anyone else, only what concerns the merchants they are linked to.
pub struct MoneyChecks {
    pub at: DateTime<Utc>,
    pub platform: bool,
    /// Each broken rule, with the merchant it was found at.
    pub problems: Vec<String>,
}

fn money_checks(conn: &mut PgConnection, linked: &Linked, platform: bool) -> Result<Option<MoneyChecks>, MerchantError> {
    let Some(check) = repo::last_check(conn)? else { return Ok(None) };
    let findings: Vec<repo::Finding> = check.findings().into_iter().filter(|f| platform || linked.ids.contains(&f.customer_id)).collect();
    let mut at: Vec<i64> = findings.iter().map(|f| f.customer_id).collect();
    at.sort_unstable();
    at.dedup();
    let names: std::collections::HashMap<i64, String> =
        if at.is_empty() { Default::default() } else { repo::customers(conn, &at)?.into_iter().map(|c| (c.id, c.name)).collect() };
    let problems = findings
        .iter()
        .map(|f| match names.get(&f.customer_id) {
            Some(name) => format!("{name}: {f}"),
            None => f.to_string(),
        })
        .collect();
    Ok(Some(MoneyChecks { at: check.created_at, platform, problems }))
}

/// Suspected double charges the payments page lists; the rest are on `/dashboard/duplicates`.
pub const SUSPECTS_SHOWN: i64 = 10;

/// `platform`: the viewer is an administrator, who sees the money checks of every merchant.
pub fn overview(conn: &mut PgConnection, linked: &Linked, filter: &PaymentFilter, params: &ListParams, since: DateTime<Utc>, platform: bool) -> Result<Overview, MerchantError> {
    let scope = visible_scope(linked, filter)?;
    let (rows, has_more) = payments_page(conn, linked, filter, params)?;
    Ok(Overview {
        rows,
        has_more,
        volume: repo::daily_volume(conn, &scope, filter)?,
        customers: repo::customers(conn, &linked.ids)?,
        check: money_checks(conn, linked, platform)?,
        suspects: repo::duplicate_groups(conn, &scope, since, None, SUSPECTS_SHOWN + 1)?,
    })
}

// --- payments nobody can finish ---------------------------------------------------------------

/// Whether a payment's outcome is open and nothing will finish it on its own: unconfirmed (the
/// gateway's answer is unknown), or pending or failed-retryable with its charge job dead. A
/// payment a worker holds (processing), or whose job may still run, is not stuck. Only a stuck
/// payment may be sent again or settled by hand.
pub fn stuck(status: crate::payments::PaymentStatus, retryable: bool, charge_job_dead: bool) -> bool {
    use crate::payments::PaymentStatus as S;
    match status {
        S::RequiresConfirmation => true,
        S::Pending => charge_job_dead,
        S::Failed => retryable && charge_job_dead,
        S::Processing | S::Completed => false,
    }
}

/// The unique key of an order's charge job, to ask whether it died.
pub fn charge_job_key(order_id: i64) -> String {
    format!("{}:{order_id}", crate::orders::pipeline::CHARGE_ORDER)
}

/// A staff member's decision about a stuck payment: `replay`, `succeeded` (with the gateway's
/// id) or `failed`, and their note.
pub struct HandAsk {
    pub user_id: i64,
    pub action: String,
    pub gateway_id: String,
    pub note: String,
}

/// What became of a hand decision about a payment, in the words the merchant is shown.
pub enum HandDecision {
    /// The payment changed (or was sent again): the audit log has it.
    Done(String),
    /// Nothing changed, and nothing was written to the audit log.
    Refused(String),
}

/// Sends a stuck payment's charge again (`replay`), or settles it by hand (`succeeded` with the
/// gateway's id, or `failed`), with the operator's note. The payment is locked, judged stuck, and
/// changed, and the audit entry written, in one transaction: an entry exists exactly when
/// something changed.
pub fn decide_by_hand(
    conn: &mut PgConnection,
    processor: &crate::payments::PaymentProcessor,
    payment_id: i64,
    ask: &HandAsk,
    charge_attempts: i32,
    now: DateTime<Utc>,
) -> Result<HandDecision, MerchantError> {
    use crate::payments::PaymentStatus as S;
    let HandAsk { user_id, action, gateway_id, note } = ask;
    conn.transaction(|conn| {
        let payment = crate::payments::repo::lock_by_id(conn, payment_id)?.ok_or(MerchantError::NotFound("payment"))?;
        let dead = !jobs::dead_unique_keys(conn, &[charge_job_key(payment.order_id)])?.is_empty();
        if !stuck(payment.status, payment.retryable, dead) {
            return Ok(HandDecision::Refused(match payment.status {
                S::Completed => "The payment has already completed; nothing changed.".to_string(),
                S::Failed if !payment.retryable => "The payment has already failed for good; nothing changed.".to_string(),
                _ => "The payment is still being worked on (a worker holds it, or its charge will be tried again), so it cannot be \
                      settled by hand; nothing changed."
                    .to_string(),
            }));
        }
        let message = match action.as_str() {
            "replay" if payment.status == S::RequiresConfirmation => {
                jobs::enqueue(conn, &crate::orders::pipeline::confirm_job(payment.id), now)?;
                "The gateway will be asked about this payment now.".to_string()
            }
            "replay" => {
                let order = crate::payments::PayOrder { user_id: payment.user_id, order_id: payment.order_id };
                jobs::enqueue(conn, &crate::orders::pipeline::charge_job(order, charge_attempts), now)?;
                "The charge was sent again under its own key (the gateway cannot take it twice).".to_string()
            }
            "succeeded" | "failed" => {
                let charge = (action == "succeeded").then(|| gateway_id.trim().to_string());
                match processor.settle_by_hand(conn, payment.id, charge, note)? {
                    Some(p) => format!("The payment is now {}.", p.status),
                    None => return Ok(HandDecision::Refused("The payment was already settled; nothing changed.".into())),
                }
            }
            _ => return Err(MerchantError::BadInput("Unknown action.".into())),
        };
        repo::audit(conn, Some(*user_id), &format!("payment_{action}"), &format!("payment {}", payment.reference), note)?;
        Ok(HandDecision::Done(message))
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

/// A visible customer the caller owns: not found if not visible, refused if only a member.
fn owned_customer(linked: &Linked, id: i64) -> Result<i64, MerchantError> {
    let id = visible_customer(&linked.ids, id)?;
    linked.owns(id).then_some(id).ok_or(MerchantError::OwnersOnly)
}

/// Renames a customer the caller owns or changes its country (`Some(None)` clears it).
pub fn update_customer(conn: &mut PgConnection, linked: &Linked, id: i64, name: Option<&str>, country: Option<Option<&str>>) -> Result<Customer, MerchantError> {
    let id = owned_customer(linked, id)?;
    Ok(repo::update_customer(conn, id, name, country)?)
}

/// Links the user with this email to a customer the caller owns, in this role (or gives a
/// linked user this role), audited; the customer keeps at least one owner.
pub fn link_user(conn: &mut PgConnection, linked: &Linked, id: i64, email: &str, role: Role, by: i64) -> Result<(), MerchantError> {
    let id = owned_customer(linked, id)?;
    repo::link_user(conn, id, email, role, by)
}

/// Unlinks a user (`usr_…`) from a visible customer, audited: owners unlink anyone, a member only
/// themselves (leaving); the customer keeps at least one owner.
pub fn unlink_user(conn: &mut PgConnection, linked: &Linked, id: i64, user: &str, by: i64) -> Result<(), MerchantError> {
    let id = visible_customer(&linked.ids, id)?;
    let user = ids::USER.parse(user).map(|u| repo::user_key(conn, u)).transpose()?.flatten().ok_or(MerchantError::NotFound("user"))?;
    if user != by {
        owned_customer(linked, id)?;
    }
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
