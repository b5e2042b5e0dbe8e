//! The API's objects, in Stripe's shapes: prefixed ids, `object`, money in minor units, Unix
//! seconds.

use serde_json::{json, Value};

use crate::merchants::domain::unix;
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
        .map(|u| json!({ "id": USER.show(u.public_id), "email": u.email, "name": u.name, "role": u.role }))
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
        "amount": p.money().minor_units(),
        "amount_refunded": p.refunded().minor_units(),
        "refunded": p.status == PaymentStatus::Completed && p.amount_refunded >= p.amount,
        "currency": p.currency.lower(),
        "status": p.state(),
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
        "amount": r.money().minor_units(),
        "currency": r.currency.lower(),
        "status": r.status,
        "reason": r.reason,
        "created": unix(r.created_at),
    })
}

/// A customer's balance: `customer` is the id the caller named it by.
pub fn balance(customer: &str, balances: &[Balance]) -> Value {
    let available: Vec<Value> =
        balances.iter().map(|b| json!({ "amount": b.money().minor_units(), "currency": b.currency.lower() })).collect();
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
        "amount": e.money().minor_units(),
        "currency": e.currency.lower(),
        "source": source,
        "created": unix(e.created_at),
    })
}

/// A page of objects: `has_more` says whether more lie beyond it in the direction walked.
pub fn list(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({ "object": "list", "url": url, "has_more": has_more, "data": data })
}

/// The objects above and the error object, as `components.schemas` of the OpenAPI document.
pub fn schemas() -> Value {
    let string = json!({ "type": "string" });
    let nullable = json!({ "type": "string", "nullable": true });
    let int = json!({ "type": "integer" });
    let id = |prefix: &str| json!({ "type": "string", "pattern": format!("^{prefix}_[0-9a-f]{{32}}$") });
    let uuid = json!({ "type": "string", "format": "uuid" });
    let literal = |value: &str| json!({ "type": "string", "enum": [value] });
    let object = |required: &[&str], properties: Value| json!({ "type": "object", "required": required, "properties": properties });
    let list = |item: &str| {
        object(
            &["object", "url", "has_more", "data"],
            json!({
                "object": literal("list"),
                "url": string,
                "has_more": { "type": "boolean" },
                "data": { "type": "array", "items": { "$ref": format!("#/components/schemas/{item}") } },
            }),
        )
    };
    let currency = json!({ "type": "string", "enum": ["usd", "eur", "gbp", "dkk"] });
    json!({
        "Token": object(&["token", "token_type", "expires_in", "expires_at"], json!({
            "token": string, "token_type": literal("Bearer"), "expires_in": int, "expires_at": int,
        })),
        "User": object(&["id", "object", "email", "name", "customers"], json!({
            "id": id("usr"), "object": literal("user"), "email": string, "name": string,
            "customers": { "type": "array", "items": id("cus") },
        })),
        "Customer": object(&["id", "object", "name", "country", "created", "users"], json!({
            "id": id("cus"), "object": literal("customer"), "name": string, "country": nullable, "created": int,
            "users": { "type": "array", "items": object(&["id", "email", "name", "role"], json!({ "id": id("usr"), "email": string, "name": string, "role": { "type": "string", "enum": ["owner", "member"] } })) },
        })),
        "CustomerList": list("Customer"),
        "Payment": object(
            &["id", "object", "amount", "amount_refunded", "refunded", "currency", "status", "final", "customer", "user", "description",
              "failure_code", "failure_message", "transaction_id", "created"],
            json!({
                "id": uuid, "object": literal("payment"), "amount": int, "amount_refunded": int, "refunded": { "type": "boolean" },
                "currency": currency,
                "status": {
                    "type": "string",
                    "enum": ["pending", "processing", "completed", "refunded", "partially_refunded", "failed", "requires_confirmation"],
                    "description": "A completed payment given back in full is refunded, in part partially_refunded (the status filter's completed includes both)",
                },
                "final": { "type": "boolean" }, "customer": id("cus"), "user": id("usr"), "description": nullable,
                "failure_code": nullable, "failure_message": nullable, "transaction_id": nullable, "created": int,
            }),
        ),
        "PaymentList": list("Payment"),
        "Refund": object(&["id", "object", "payment", "amount", "currency", "status", "reason", "created"], json!({
            "id": id("re"), "object": literal("refund"), "payment": uuid, "amount": int, "currency": currency,
            "status": { "type": "string", "enum": ["pending", "succeeded", "failed"] }, "reason": nullable, "created": int,
        })),
        "RefundList": list("Refund"),
        "Balance": object(&["object", "customer", "available"], json!({
            "object": literal("balance"), "customer": id("cus"),
            "available": { "type": "array", "items": object(&["amount", "currency"], json!({ "amount": int, "currency": currency })) },
        })),
        "BalanceTransaction": object(&["id", "object", "type", "amount", "currency", "source", "created"], json!({
            "id": id("txn"), "object": literal("balance_transaction"),
            "type": { "type": "string", "enum": ["payment", "refund", "refund_failure", "adjustment"] },
            "amount": int, "currency": currency, "source": string, "created": int,
        })),
        "BalanceTransactionList": list("BalanceTransaction"),
        "Error": object(&["error"], json!({
            "error": object(&["type", "code", "message"], json!({
                "type": { "type": "string", "enum": ["invalid_request_error", "authentication_error", "idempotency_error", "rate_limit_error", "api_error"] },
                "code": string, "message": string, "param": nullable,
            })),
        })),
    })
}
