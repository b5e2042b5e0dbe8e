//! The API's handlers: parse the request into domain values, check what the caller may see, run
//! the work, shape the answer.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::input::{self, parse_query, read_object, Object, Query};
use super::{keyed, respond, run, views, ApiUser};
use crate::auth::{password, repo as accounts};
use crate::merchants::domain::{Currency, Cursor, ListParams, MinorUnits, PaymentFilter, MAX_PAYMENT, MIN_PAYMENT};
use crate::merchants::intake::Intake;
use crate::merchants::jobs::refund_job;
use crate::merchants::repo::{self, Keyset, Principal};
use crate::merchants::{MerchantsState, MerchantError};
use crate::jobs;
use crate::orders::pipeline::start_api_payment;
use crate::payments::domain::Amount;
use crate::payments::refunds::{self, NewRefund, RefundReason};
use crate::web::{client_ip, Db};

type State = web::Data<MerchantsState>;

fn query(req: &HttpRequest, allowed: &[&str]) -> Result<Query, ApiError> {
    parse_query(req.query_string(), allowed)
}

/// A path id the caller may see, or 404 — malformed, missing and invisible look the same.
fn visible_customer(user: &Principal, raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|id| user.sees(*id)).ok_or_else(|| ApiError::missing_resource("customer", None))
}

fn payment_reference(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::missing_resource("payment", None))
}

// --- auth ---------------------------------------------------------------------------------------

pub async fn create_token(req: HttpRequest, payload: web::Payload, db: Db, state: State) -> Result<HttpResponse, ApiError> {
    let body = read_object(&req, payload).await?;
    body.only(&["email", "password", "expires_in"])?;
    let email = body.required_string("email")?;
    let password = body.required_string("password")?;
    let expires_in = match body.int("expires_in")? {
        None => 3600,
        Some(n) if (1..=86_400).contains(&n) => n,
        Some(_) => return Err(ApiError::bad_value("expires_in", "it must be between 1 and 86400 seconds")),
    };
    let ip = client_ip(&req);
    if let Err(throttled) = state.logins.check(&email, &ip).await {
        return Err(ApiError::rate_limited(throttled.retry_after.as_secs().max(1)));
    }
    let lookup = email.clone();
    let user = run(&db, move |conn| Ok(accounts::find_by_email(conn, &lookup)?)).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let matches = state
        .hashing
        .run(move || password::check(stored.as_deref(), &password))
        .await
        .map_err(|_| ApiError::unavailable("the password hashing pool is full"))?;
    let user = match user {
        Some(user) if matches => user,
        _ => {
            state.logins.failed(&email, &ip).await;
            return Err(ApiError::unauthenticated("invalid_credentials", "Invalid email or password."));
        }
    };
    state.logins.succeeded(&email, &ip).await;
    let (token, claims) = state.tokens.issue(user.id, state.clock.now(), expires_in);
    Ok(respond(StatusCode::OK, &json!({ "token": token, "token_type": "Bearer", "expires_in": expires_in, "expires_at": claims.exp })))
}

pub async fn revoke_token(user: ApiUser, db: Db, state: State) -> Result<HttpResponse, ApiError> {
    let (jti, user_id) = (user.claims.jti, user.principal.id);
    let expires_at = crate::merchants::domain::from_unix(user.claims.exp).unwrap_or_else(|| state.clock.now());
    run(&db, move |conn| Ok(repo::revoke_token(conn, jti, user_id, expires_at)?)).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn me(req: HttpRequest, user: ApiUser) -> Result<HttpResponse, ApiError> {
    query(&req, &[])?;
    Ok(respond(StatusCode::OK, &views::me(&user.principal)))
}

// --- customers ----------------------------------------------------------------------------------

fn customer_name(body: &Object, required: bool) -> Result<Option<String>, ApiError> {
    let name = match body.string("name")? {
        Some(name) => name,
        None if required => return Err(ApiError::missing("name")),
        None => return Ok(None),
    };
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 200 {
        return Err(ApiError::bad_value("name", "it must be 1 to 200 characters"));
    }
    Ok(Some(trimmed.to_string()))
}

/// `Some(None)` clears the country (`"country": null`).
fn country(body: &Object) -> Result<Option<Option<String>>, ApiError> {
    match body.0.get("country") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(c)) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => Ok(Some(Some(c.to_ascii_uppercase()))),
        Some(_) => Err(ApiError::bad_value("country", "it must be a two-letter ISO 3166-1 code such as DK")),
    }
}

fn customer_json(conn: &mut diesel::PgConnection, id: i64) -> Result<Value, ApiError> {
    let customer = repo::customer(conn, id)?.ok_or_else(|| ApiError::missing_resource("customer", None))?;
    let users = repo::linked_users(conn, &[id])?;
    Ok(views::customer(&customer, &users))
}

pub async fn create_customer(req: HttpRequest, payload: web::Payload, user: ApiUser, db: Db, state: State) -> Result<HttpResponse, ApiError> {
    let body = read_object(&req, payload).await?;
    body.only(&["name", "country"])?;
    let name = customer_name(&body, true)?.expect("required");
    let country = country(&body)?.flatten();
    let user_id = user.principal.id;
    keyed(&db, &req, &state, &user.principal, &body, false, move |conn| {
        let created = repo::create_customer(conn, user_id, &name, country.as_deref())?;
        Ok((StatusCode::CREATED, customer_json(conn, created.id)?))
    })
    .await
}

/// A numeric cursor that must name a visible object, else 400 `resource_missing`.
fn numeric_cursor(raw: &str, param: &str, visible: impl Fn(i64) -> bool) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| visible(*id))
        .ok_or_else(|| ApiError { status: StatusCode::BAD_REQUEST, ..ApiError::missing_resource("object", Some(param)) })
}

/// Trims a `limit + 1` page to `limit` and says whether more lie beyond it: for a page walked
/// backwards (`ending_before`) the extra row is the newest, at the front.
fn trim<T>(mut rows: Vec<T>, params: &ListParams) -> (Vec<T>, bool) {
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

pub async fn list_customers(req: HttpRequest, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    let params = query(&req, &input::LIST_PARAMS)?.list(10)?;
    let visible = user.principal.customers.clone();
    let (after, before) = match &params.cursor {
        Some(Cursor::After(raw)) => (Some(numeric_cursor(raw, "starting_after", |id| visible.contains(&id))?), None),
        Some(Cursor::Before(raw)) => (None, Some(numeric_cursor(raw, "ending_before", |id| visible.contains(&id))?)),
        None => (None, None),
    };
    let limit = params.limit;
    let (customers, users) = run(&db, move |conn| {
        let customers = repo::customers_page(conn, &visible, after, before, limit)?;
        let ids: Vec<i64> = customers.iter().map(|c| c.id).collect();
        Ok((customers, repo::linked_users(conn, &ids)?))
    })
    .await?;
    let (customers, has_more) = trim(customers, &params);
    let data = customers.iter().map(|c| views::customer(c, &users)).collect();
    Ok(respond(StatusCode::OK, &views::list("/api/v1/customers", data, has_more)))
}

pub async fn get_customer(req: HttpRequest, path: web::Path<String>, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    query(&req, &[])?;
    let id = visible_customer(&user.principal, &path)?;
    Ok(respond(StatusCode::OK, &run(&db, move |conn| customer_json(conn, id)).await?))
}

pub async fn update_customer(req: HttpRequest, path: web::Path<String>, payload: web::Payload, user: ApiUser, db: Db, state: State) -> Result<HttpResponse, ApiError> {
    let id = visible_customer(&user.principal, &path)?;
    let body = read_object(&req, payload).await?;
    body.only(&["name", "country"])?;
    let name = customer_name(&body, false)?;
    let country = country(&body)?;
    keyed(&db, &req, &state, &user.principal, &body, false, move |conn| {
        repo::update_customer(conn, id, name.as_deref(), country.as_ref().map(|c| c.as_deref()))?;
        Ok((StatusCode::OK, customer_json(conn, id)?))
    })
    .await
}

pub async fn link_user(req: HttpRequest, path: web::Path<String>, payload: web::Payload, user: ApiUser, db: Db, state: State) -> Result<HttpResponse, ApiError> {
    let id = visible_customer(&user.principal, &path)?;
    let body = read_object(&req, payload).await?;
    body.only(&["email"])?;
    let email = body.required_string("email")?;
    let by = user.principal.id;
    keyed(&db, &req, &state, &user.principal, &body, false, move |conn| {
        repo::link_user(conn, id, &email, by)?;
        Ok((StatusCode::OK, customer_json(conn, id)?))
    })
    .await
}

pub async fn unlink_user(req: HttpRequest, path: web::Path<(String, String)>, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    query(&req, &[])?;
    let id = visible_customer(&user.principal, &path.0)?;
    let target: i64 = path.1.parse().map_err(|_| ApiError::missing_resource("user", None))?;
    let by = user.principal.id;
    let value = run(&db, move |conn| {
        repo::unlink_user(conn, id, target, by)?;
        customer_json(conn, id)
    })
    .await?;
    Ok(respond(StatusCode::OK, &value))
}

pub async fn balance(req: HttpRequest, path: web::Path<String>, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    query(&req, &[])?;
    let id = visible_customer(&user.principal, &path)?;
    let balances = run(&db, move |conn| Ok(repo::balances(conn, &[id])?)).await?;
    Ok(respond(StatusCode::OK, &views::balance(id, &balances)))
}

pub async fn balance_transactions(req: HttpRequest, path: web::Path<String>, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    let params = query(&req, &input::LIST_PARAMS)?.list(10)?;
    let id = visible_customer(&user.principal, &path)?;
    let cursor = params.cursor.clone();
    let limit = params.limit;
    let entries = run(&db, move |conn| {
        let mut in_ledger = |raw: &str, param: &str| -> Result<i64, ApiError> {
            let entry: Option<i64> = raw.parse().ok();
            let owner = match entry {
                Some(e) => repo::ledger_entry_customer(conn, e)?,
                None => None,
            };
            numeric_cursor(raw, param, |_| owner == Some(id))
        };
        let (after, before) = match &cursor {
            Some(Cursor::After(raw)) => (Some(in_ledger(raw, "starting_after")?), None),
            Some(Cursor::Before(raw)) => (None, Some(in_ledger(raw, "ending_before")?)),
            None => (None, None),
        };
        Ok(repo::ledger_page(conn, id, after, before, limit)?)
    })
    .await?;
    let (entries, has_more) = trim(entries, &params);
    let url = format!("/api/v1/customers/{id}/balance_transactions");
    Ok(respond(StatusCode::OK, &views::list(&url, entries.iter().map(views::balance_transaction).collect(), has_more)))
}

// --- payments -----------------------------------------------------------------------------------

/// The body of a new payment, parsed.
struct NewPayment {
    customer: i64,
    amount: MinorUnits,
    currency: Currency,
    description: Option<String>,
    payment_method: Option<String>,
}

fn new_payment(body: &Object, user: &Principal) -> Result<NewPayment, ApiError> {
    body.only(&["customer", "amount", "currency", "description", "payment_method"])?;
    let customer = body.int("customer")?.ok_or_else(|| ApiError::missing("customer"))?;
    let amount = body.int("amount")?.ok_or_else(|| ApiError::missing("amount"))?;
    let currency = body.required_string("currency")?;
    let description = body.string("description")?;
    let payment_method = body.string("payment_method")?;
    if amount < MIN_PAYMENT {
        return Err(ApiError::invalid("amount_too_small", format!("Amount must be at least {MIN_PAYMENT} (minor units).")).param("amount"));
    }
    if amount > MAX_PAYMENT {
        return Err(ApiError::invalid("amount_too_large", format!("Amount must be at most {MAX_PAYMENT} (minor units).")).param("amount"));
    }
    let currency = Currency::parse(&currency).ok_or_else(|| {
        ApiError::invalid("currency_not_supported", format!("Currency {currency:?} is not supported; use usd, eur, gbp or dkk.")).param("currency")
    })?;
    if description.as_ref().is_some_and(|d| d.chars().count() > 500) {
        return Err(ApiError::bad_value("description", "it must be at most 500 characters"));
    }
    let method_ok = |m: &String| m.len() <= 100 && m.starts_with("pm_") && m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if payment_method.as_ref().is_some_and(|m| !method_ok(m)) {
        return Err(ApiError::bad_value("payment_method", "it must be a payment method id such as pm_card_visa"));
    }
    if !user.sees(customer) {
        return Err(ApiError::missing_resource("customer", Some("customer")));
    }
    Ok(NewPayment { customer, amount: MinorUnits(amount), currency, description, payment_method })
}

pub async fn create_payment(req: HttpRequest, payload: web::Payload, user: ApiUser, db: Db, state: State) -> Result<HttpResponse, ApiError> {
    let body = read_object(&req, payload).await?;
    let new = new_payment(&body, &user.principal)?;
    let key = super::key_of(&req, true)?.expect("required");
    let (user_id, limits, now) = (user.principal.id, state.limits, state.clock.now());
    // Everything the answer says is decided here, so the answer is stored with the rows it
    // describes, in the statement (and commit) that writes them (see `intake`).
    let amount = new.amount.to_decimal();
    let row = repo::PaymentRow {
        id: 0,
        order_id: 0,
        reference: Uuid::new_v4(),
        user_id,
        customer_id: new.customer,
        amount: amount.clone(),
        amount_refunded: bigdecimal::BigDecimal::from(0),
        currency: new.currency.code().to_string(),
        status: crate::payments::PaymentStatus::Pending,
        retryable: true,
        description: new.description.clone(),
        error_code: None,
        error_message: None,
        external_transaction_id: None,
        created_at: chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now),
        customer_name: String::new(),
        user_email: String::new(),
    };
    let answer = views::payment(&row);
    let submitted = repo::NewApiPayment {
        start: crate::orders::pipeline::ApiPaymentStart {
            user_id,
            customer_id: new.customer,
            amount,
            currency: new.currency.code().to_string(),
            description: new.description.clone(),
            payment_method: new.payment_method.clone(),
            reference: row.reference,
            created_at: row.created_at,
        },
        key,
        fingerprint: super::fingerprint(&req, &body),
        answer: answer.to_string(),
    };
    match state.intake.submit(submitted).await {
        Intake::Created => {
            state.wake.notify();
            Ok(respond(StatusCode::CREATED, &answer))
        }
        Intake::QueueFull => Err(ApiError::unavailable("the payments queue is full")),
        // The key was used before — replay it, refuse it, or (expired) start over, by the rules —
        // or the batch could not be written: the general path, for this request alone.
        Intake::KeyTaken | Intake::Retry => {
            let new = new_payment(&body, &user.principal)?;
            let response = keyed(&db, &req, &state, &user.principal, &body, true, move |conn| {
                let payment = start_api_payment(
                    conn,
                    user_id,
                    new.customer,
                    &new.amount.to_decimal(),
                    new.currency.code(),
                    new.description.as_deref(),
                    new.payment_method.as_deref(),
                    limits,
                    now,
                )
                .map_err(MerchantError::from)?;
                Ok((StatusCode::CREATED, views::payment(&repo::payment_by_id(conn, payment.id)?)))
            })
            .await?;
            if response.status() == StatusCode::CREATED {
                state.wake.notify();
            }
            Ok(response)
        }
    }
}

/// The filter as the caller may use it: a customer they cannot see is 404 (with `param`).
pub fn visible_scope(user_customers: &[i64], filter: &PaymentFilter) -> Result<Vec<i64>, ApiError> {
    match filter.customer {
        Some(c) if user_customers.contains(&c) => Ok(vec![c]),
        Some(_) => Err(ApiError::missing_resource("customer", Some("customer"))),
        None => Ok(user_customers.to_vec()),
    }
}

/// A page of payments for a parsed request: the rows (at most `limit`) and `has_more`.
pub fn payments_page(
    conn: &mut diesel::PgConnection,
    user_customers: &[i64],
    filter: &PaymentFilter,
    params: &ListParams,
) -> Result<(Vec<repo::PaymentRow>, bool), ApiError> {
    let scope = visible_scope(user_customers, filter)?;
    let position = |conn: &mut diesel::PgConnection, raw: &str, param: &str| -> Result<(chrono::DateTime<chrono::Utc>, i64), ApiError> {
        let found = match Uuid::parse_str(raw) {
            Ok(reference) => repo::payment_position(conn, user_customers, reference)?,
            Err(_) => None,
        };
        found.ok_or_else(|| ApiError { status: StatusCode::BAD_REQUEST, ..ApiError::missing_resource("payment", Some(param)) })
    };
    let from = match &params.cursor {
        Some(Cursor::After(raw)) => {
            let (at, id) = position(conn, raw, "starting_after")?;
            Some(Keyset::After(at, id))
        }
        Some(Cursor::Before(raw)) => {
            let (at, id) = position(conn, raw, "ending_before")?;
            Some(Keyset::Before(at, id))
        }
        None => None,
    };
    let rows = repo::payments_page(conn, &scope, filter, from, params.limit + 1)?;
    Ok(trim(rows, params))
}

pub async fn list_payments(req: HttpRequest, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    let query = query(&req, super::PAYMENT_LIST)?;
    let (params, filter) = (query.list(10)?, query.payment_filter()?);
    let visible = user.principal.customers.clone();
    let (rows, has_more) = run(&db, move |conn| payments_page(conn, &visible, &filter, &params)).await?;
    Ok(respond(StatusCode::OK, &views::list("/api/v1/payments", rows.iter().map(views::payment).collect(), has_more)))
}

pub async fn get_payment(req: HttpRequest, path: web::Path<String>, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    query(&req, &[])?;
    let reference = payment_reference(&path)?;
    let visible = user.principal.customers.clone();
    let row = run(&db, move |conn| Ok(repo::payment(conn, &visible, reference)?)).await?;
    let row = row.ok_or_else(|| ApiError::missing_resource("payment", None))?;
    Ok(respond(StatusCode::OK, &views::payment(&row)))
}

/// A refund asked for by someone who may see the payment; reserved, and its job enqueued, in the
/// caller's transaction.
pub fn start_refund(
    conn: &mut diesel::PgConnection,
    payment_id: i64,
    request: NewRefund,
    refund_attempts: i32,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<refunds::Refund, MerchantError> {
    let (refund, created) = refunds::reserve(conn, &NewRefund { payment_id, ..request }, now)?;
    if created {
        jobs::enqueue(conn, &refund_job(refund.id, refund_attempts), now)?;
    }
    Ok(refund)
}

pub async fn create_refund(req: HttpRequest, path: web::Path<String>, payload: web::Payload, user: ApiUser, db: Db, state: State) -> Result<HttpResponse, ApiError> {
    let body = read_object(&req, payload).await?;
    body.only(&["amount", "reason"])?;
    let amount = match body.int("amount")? {
        None => None,
        Some(n) if n < 1 => return Err(ApiError::invalid("amount_too_small", "A refund is at least 1 (minor unit).").param("amount")),
        Some(n) if n > MAX_PAYMENT => return Err(ApiError::invalid("amount_too_large", format!("Amount must be at most {MAX_PAYMENT}.")).param("amount")),
        Some(n) => Some(Amount::new(MinorUnits(n).to_decimal()).map_err(|e| ApiError::bad_value("amount", e))?),
    };
    let reason = match body.string("reason")? {
        None => None,
        Some(raw) => Some(RefundReason::parse(&raw).ok_or_else(|| {
            ApiError::bad_value("reason", "it must be one of duplicate, fraudulent, requested_by_customer")
        })?),
    };
    let reference = payment_reference(&path)?;
    let key = req.headers().get("Idempotency-Key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (visible, user_id, attempts, now) = (user.principal.customers.clone(), user.principal.id, state.refund_attempts, state.clock.now());
    let response = keyed(&db, &req, &state, &user.principal, &body, true, move |conn| {
        let payment = repo::payment(conn, &visible, reference)?.ok_or_else(|| ApiError::missing_resource("payment", None))?;
        let request = NewRefund { payment_id: payment.id, user_id, amount, reason, idempotency_key: format!("api:{user_id}:{key}") };
        let refund = start_refund(conn, payment.id, request, attempts, now)?;
        Ok((StatusCode::CREATED, views::refund(&refund, payment.reference)))
    })
    .await?;
    if response.status() == StatusCode::CREATED {
        state.wake.notify();
    }
    Ok(response)
}

pub async fn list_refunds(req: HttpRequest, path: web::Path<String>, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    let params = query(&req, &input::LIST_PARAMS)?.list(10)?;
    let reference = payment_reference(&path)?;
    let visible = user.principal.customers.clone();
    let (payment, all) = run(&db, move |conn| {
        let payment = repo::payment(conn, &visible, reference)?.ok_or_else(|| ApiError::missing_resource("payment", None))?;
        let all = refunds::for_payment(conn, payment.id)?;
        Ok((payment, all))
    })
    .await?;
    // Newest first; a payment has few refunds, so the page is cut from all of them.
    let mut all: Vec<_> = all.into_iter().rev().collect();
    let at = |raw: &str, param: &str| {
        all.iter().position(|r| r.reference.to_string() == raw).ok_or_else(|| ApiError {
            status: StatusCode::BAD_REQUEST,
            ..ApiError::missing_resource("refund", Some(param))
        })
    };
    let limit = params.limit as usize;
    let (page, has_more) = match &params.cursor {
        None => (0..all.len().min(limit), all.len() > limit),
        Some(Cursor::After(raw)) => {
            let start = at(raw, "starting_after")? + 1;
            (start..all.len().min(start + limit), all.len() > start + limit)
        }
        Some(Cursor::Before(raw)) => {
            let end = at(raw, "ending_before")?;
            (end.saturating_sub(limit)..end, end > limit)
        }
    };
    let data = all.drain(page).map(|r| views::refund(&r, payment.reference)).collect();
    Ok(respond(StatusCode::OK, &views::list(&format!("/api/v1/payments/{reference}/refunds"), data, has_more)))
}
