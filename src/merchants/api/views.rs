//! The API's objects, in Stripe's shapes: ids, `object`, money in minor units, Unix seconds.

use serde_json::{json, Value};

use crate::merchants::domain::{api_currency, unix, MinorUnits};
use crate::merchants::repo::{Balance, Customer, LedgerEntry, LinkedUser, PaymentRow, Principal};
use crate::payments::refunds::Refund;
use crate::payments::PaymentStatus;

pub fn me(user: &Principal) -> Value {
    json!({ "id": user.id, "object": "user", "email": user.email, "name": user.name, "customers": user.customers })
}

pub fn customer(c: &Customer, users: &[LinkedUser]) -> Value {
    let linked: Vec<Value> = users
        .iter()
        .filter(|u| u.customer_id == c.id)
        .map(|u| json!({ "id": u.id, "email": u.email, "name": u.name }))
        .collect();
    json!({
        "id": c.id,
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
        "customer": p.customer_id,
        "user": p.user_id,
        "description": p.description,
        "failure_code": if failed { p.error_code.clone() } else { None },
        "failure_message": if failed { p.error_message.clone() } else { None },
        "transaction_id": p.external_transaction_id,
        "created": unix(p.created_at),
    })
}

pub fn refund(r: &Refund, payment: uuid::Uuid) -> Value {
    json!({
        "id": r.reference,
        "object": "refund",
        "payment": payment,
        "amount": MinorUnits::of(&r.amount),
        "currency": api_currency(&r.currency),
        "status": r.status,
        "reason": r.reason,
        "created": unix(r.created_at),
    })
}

pub fn balance(customer_id: i64, balances: &[Balance]) -> Value {
    let available: Vec<Value> = balances
        .iter()
        .filter(|b| b.customer_id == customer_id)
        .map(|b| json!({ "amount": MinorUnits::of(&b.available), "currency": api_currency(&b.currency) }))
        .collect();
    json!({ "object": "balance", "customer": customer_id, "available": available })
}

pub fn balance_transaction(e: &LedgerEntry) -> Value {
    json!({
        "id": e.id,
        "object": "balance_transaction",
        "type": e.kind,
        "amount": MinorUnits::of(&e.amount),
        "currency": api_currency(&e.currency),
        "source": e.source,
        "created": unix(e.created_at),
    })
}

/// A page of objects: `has_more` says whether more lie beyond it in the direction walked.
pub fn list(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({ "object": "list", "url": url, "has_more": has_more, "data": data })
}
