//! The API's objects, in Stripe's shapes: prefixed ids, `object`, money in minor units, Unix
//! seconds.

use serde_json::{json, Value};

use crate::merchants::domain::{api_currency, unix, MinorUnits};
use crate::merchants::ids::{BALANCE_TRANSACTION, CUSTOMER, REFUND, USER};
use crate::merchants::repo::{Balance, Customer, LedgerEntry, LinkedUser, PaymentRow, Principal};
use crate::payments::refunds::Refund;
use crate::payments::PaymentStatus;

pub fn me(user: &Principal) -> Value {
    let customers: Vec<String> = user.customer_public.iter().map(|c| CUSTOMER.show(*c)).collect();
    json!({ "id": USER.show(user.public_id), "object": "user", "email": user.email, "name": user.name, "customers": customers })
}

pub fn customer(c: &Customer, users: &[LinkedUser]) -> Value {
    let linked: Vec<Value> = users
        .iter()
        .filter(|u| u.customer_id == c.id)
        .map(|u| json!({ "id": USER.show(u.public_id), "email": u.email, "name": u.name }))
        .collect();
    json!({
        "id": CUSTOMER.show(c.public_id),
        "object": "customer",
        "name": c.name,
        "country": c.country,
        "created": unix(c.created_at),
        "users": linked,
    })
}

pub fn payment(p: &PaymentRow) -> Value {
    let failed = p.status == PaymentStatus::Failed;
    json!({
        "id": p.reference,
        "object": "payment",
        "amount": MinorUnits::of(&p.amount),
        "amount_refunded": MinorUnits::of(&p.amount_refunded),
        "refunded": p.status == PaymentStatus::Completed && p.amount_refunded >= p.amount,
        "currency": api_currency(&p.currency),
        "status": p.status.as_str(),
        "final": p.is_final(),
        "customer": CUSTOMER.show(p.customer_public_id),
        "user": USER.show(p.user_public_id),
        "description": p.description,
        "failure_code": if failed { p.error_code.clone() } else { None },
        "failure_message": if failed { p.error_message.clone() } else { None },
        "transaction_id": p.external_transaction_id,
        "created": unix(p.created_at),
    })
}

pub fn refund(r: &Refund, payment: uuid::Uuid) -> Value {
    json!({
        "id": REFUND.show(r.reference),
        "object": "refund",
        "payment": payment,
        "amount": MinorUnits::of(&r.amount),
        "currency": api_currency(&r.currency),
        "status": r.status,
        "reason": r.reason,
        "created": unix(r.created_at),
    })
}

/// A customer's balance: `customer` is the id the caller named it by.
pub fn balance(customer: &str, balances: &[Balance]) -> Value {
    let available: Vec<Value> =
        balances.iter().map(|b| json!({ "amount": MinorUnits::of(&b.available), "currency": api_currency(&b.currency) })).collect();
    json!({ "object": "balance", "customer": customer, "available": available })
}

/// A ledger entry; its `source` is the payment it credits (a payment id) or the refund it debits
/// or gives back (a refund id).
pub fn balance_transaction(e: &LedgerEntry) -> Value {
    let source = match e.kind.as_str() {
        "refund" | "refund_failure" => REFUND.show(e.source),
        _ => e.source.to_string(),
    };
    json!({
        "id": BALANCE_TRANSACTION.show(e.public_id),
        "object": "balance_transaction",
        "type": e.kind,
        "amount": MinorUnits::of(&e.amount),
        "currency": api_currency(&e.currency),
        "source": source,
        "created": unix(e.created_at),
    })
}

/// A page of objects: `has_more` says whether more lie beyond it in the direction walked.
pub fn list(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({ "object": "list", "url": url, "has_more": has_more, "data": data })
}
