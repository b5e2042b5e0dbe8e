//! The API's handlers: parse the request into domain values, check what the caller may see, run
//! the work, shape the answer.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::merchants::error::ApiError;
use super::input::{read_object, Object};
use crate::merchants::query::{parse_api_query, Query};
use super::{keyed, respond, run, views, ApiUser};
use crate::auth::{password, repo as accounts};
use crate::merchants::domain::{Cursor, Role, MAX_PAYMENT, MIN_PAYMENT, NAME_MAX};
use crate::payments::{Currency, Money};
use crate::web::openapi::Field;
use crate::merchants::intake::Intake;
use crate::merchants::repo::{self, Principal};
use crate::merchants::{ids, service, MerchantsState, MerchantError};
use crate::payments::gateway::TestCard;
use crate::orders::pipeline::start_api_payment;
use crate::payments::refunds::RefundReason;
use crate::web::{client_ip, Db};

type State = web::Data<MerchantsState>;

/// The request's query, taking exactly the parameters the route's table entry lists.
fn query(req: &HttpRequest, allowed: &[Field]) -> Result<Query, ApiError> {
    let names: Vec<&str> = allowed.iter().map(|f| f.name).collect();
    parse_api_query(req.query_string(), &names)
}

/// A path id (`cus_…`) the caller may see, or 404 — malformed, missing and invisible look the same.
fn visible_customer(user: &Principal, raw: &str) -> Result<i64, ApiError> {
    user.linked().find(raw).ok_or_else(|| ApiError::missing_resource("customer", None))
}

fn payment_reference(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::missing_resource("payment", None))
}

/// The longest email address (RFC 5321's path limit) and password a token request takes.
pub const MAX_EMAIL: usize = 320;
pub const MAX_PASSWORD: usize = 1_024;

// --- auth ---------------------------------------------------------------------------------------

pub async fn create_token(req: HttpRequest, payload: web::Payload, db: Db, state: State) -> Result<HttpResponse, ApiError> {
    let body = read_object(&req, payload).await?;
    body.only(&["email", "password", "expires_in"])?;
    let email = body.required_string("email")?;
    let password = body.required_string("password")?;
    if email.chars().count() > MAX_EMAIL {
        return Err(ApiError::bad_value("email", format!("it must be at most {MAX_EMAIL} characters")));
    }
    if password.chars().count() > MAX_PASSWORD {
        return Err(ApiError::bad_value("password", format!("it must be at most {MAX_PASSWORD} characters")));
    }
    let expires_in = match body.int("expires_in")? {
        None => 3600,
        Some(n) if (1..=86_400).contains(&n) => n,
        Some(_) => return Err(ApiError::bad_value("expires_in", "it must be between 1 and 86400 seconds")),
    };
    let ip = client_ip(&req);
    if let Err(throttled) = state.logins.reserve(&email, &ip).await {
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
            return Err(ApiError::unauthenticated("invalid_credentials", "Invalid email or password."));
        }
    };
    state.logins.succeeded(&email, &ip).await;
    let (token, claims) = state.tokens.issue(&ids::USER.show(user.public_id), state.clock.now(), expires_in);
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
    if trimmed.is_empty() || name.chars().count() > NAME_MAX {
        return Err(ApiError::bad_value("name", &format!("it must be 1 to {NAME_MAX} characters, not all blank")));
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

fn customer_json(conn: &mut diesel::PgConnection, visible: &[i64], id: i64) -> Result<Value, ApiError> {
    let (customer, users) = service::customer(conn, visible, id)?;
    Ok(views::customer(&customer, &users))
}

pub async fn create_customer(req: HttpRequest, payload: web::Payload, user: ApiUser, db: Db, state: State) -> Result<HttpResponse, ApiError> {
    let body = read_object(&req, payload).await?;
    body.only(&["name", "country"])?;
    let name = customer_name(&body, true)?.expect("required");
    let country = country(&body)?.flatten();
    let user_id = user.principal.id;
    keyed(&db, &req, &state, &user.principal, &body, false, move |conn| {
        let created = service::create_customer(conn, user_id, &name, country.as_deref())?;
        Ok((StatusCode::CREATED, customer_json(conn, &[created.id], created.id)?))
    })
    .await
}

pub async fn list_customers(req: HttpRequest, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    let params = query(&req, super::LIST)?.list(10)?;
    let visible = user.principal.linked();
    let (customers, users, has_more) = run(&db, move |conn| Ok(service::customers_page(conn, &visible, &params)?)).await?;
    let data = customers.iter().map(|c| views::customer(c, &users)).collect();
    Ok(respond(StatusCode::OK, &views::list("/api/v1/customers", data, has_more)))
}

pub async fn get_customer(req: HttpRequest, path: web::Path<String>, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    query(&req, &[])?;
    let (id, visible) = (visible_customer(&user.principal, &path)?, user.principal.customers.clone());
    Ok(respond(StatusCode::OK, &run(&db, move |conn| customer_json(conn, &visible, id)).await?))
}

pub async fn update_customer(req: HttpRequest, path: web::Path<String>, payload: web::Payload, user: ApiUser, db: Db, state: State) -> Result<HttpResponse, ApiError> {
    let id = visible_customer(&user.principal, &path)?;
    let body = read_object(&req, payload).await?;
    body.only(&["name", "country"])?;
    let name = customer_name(&body, false)?;
    let country = country(&body)?;
    let linked = user.principal.linked();
    keyed(&db, &req, &state, &user.principal, &body, false, move |conn| {
        service::update_customer(conn, &linked, id, name.as_deref(), country.as_ref().map(|c| c.as_deref()))?;
        Ok((StatusCode::OK, customer_json(conn, &linked.ids, id)?))
    })
    .await
}

pub async fn link_user(req: HttpRequest, path: web::Path<String>, payload: web::Payload, user: ApiUser, db: Db, state: State) -> Result<HttpResponse, ApiError> {
    let id = visible_customer(&user.principal, &path)?;
    let body = read_object(&req, payload).await?;
    body.only(&["email", "role"])?;
    let email = body.required_string("email")?;
    let role = match body.string("role")? {
        None => Role::Member,
        Some(raw) => Role::parse(&raw).ok_or_else(|| ApiError::bad_value("role", "it is owner or member"))?,
    };
    let (by, linked) = (user.principal.id, user.principal.linked());
    keyed(&db, &req, &state, &user.principal, &body, false, move |conn| {
        service::link_user(conn, &linked, id, &email, role, by)?;
        Ok((StatusCode::OK, customer_json(conn, &linked.ids, id)?))
    })
    .await
}

pub async fn unlink_user(req: HttpRequest, path: web::Path<(String, String)>, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    query(&req, &[])?;
    let id = visible_customer(&user.principal, &path.0)?;
    let target = path.1.clone();
    let (by, linked) = (user.principal.id, user.principal.linked());
    let value = run(&db, move |conn| {
        service::unlink_user(conn, &linked, id, &target, by)?;
        // The customer as it is now (to one who just left, the last time they see it).
        customer_json(conn, &linked.ids, id)
    })
    .await?;
    Ok(respond(StatusCode::OK, &value))
}

pub async fn balance(req: HttpRequest, path: web::Path<String>, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    query(&req, &[])?;
    let id = visible_customer(&user.principal, &path)?;
    let balances = run(&db, move |conn| Ok(service::balances(conn, &[id])?)).await?;
    Ok(respond(StatusCode::OK, &views::balance(&path, &balances)))
}

pub async fn balance_transactions(req: HttpRequest, path: web::Path<String>, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    let params = query(&req, super::LIST)?.list(10)?;
    let (id, visible) = (visible_customer(&user.principal, &path)?, user.principal.customers.clone());
    let (_, entries, has_more) = run(&db, move |conn| Ok(service::ledger_page(conn, &visible, id, &params)?)).await?;
    let url = format!("/api/v1/customers/{}/balance_transactions", path.as_str());
    Ok(respond(StatusCode::OK, &views::list(&url, entries.iter().map(views::balance_transaction).collect(), has_more)))
}

// --- payments -----------------------------------------------------------------------------------

/// The body of a new payment, parsed.
struct NewPayment {
    customer: i64,
    customer_public: Uuid,
    money: Money,
    description: Option<String>,
    payment_method: Option<String>,
}

fn new_payment(body: &Object, user: &Principal) -> Result<NewPayment, ApiError> {
    body.only(&["customer", "amount", "currency", "description", "payment_method"])?;
    // A customer the caller does not see — malformed, unknown or someone else's — is missing.
    let customer = match body.0.get("customer") {
        None | Some(Value::Null) => return Err(ApiError::missing("customer")),
        Some(Value::String(raw)) => user.linked().find(raw),
        Some(_) => None,
    }
    .ok_or_else(|| ApiError::missing_resource("customer", Some("customer")))?;
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
    let currency = Currency::settled(&currency).ok_or_else(|| {
        ApiError::invalid("currency_not_supported", format!("Currency {currency:?} is not supported; use usd, eur, gbp or dkk.")).param("currency")
    })?;
    if description.as_ref().is_some_and(|d| d.chars().count() > 500) {
        return Err(ApiError::bad_value("description", "it must be at most 500 characters"));
    }
    // Only payment methods the gateway knows can be charged; any other string would be charged
    // at the simulation's random rates, which no caller means.
    if let Some(method) = &payment_method {
        if TestCard::parse(Some(method)).is_none() {
            let known = TestCard::METHODS.join(", ");
            return Err(ApiError::invalid("resource_missing", format!("No such payment method: {method:?}; use one of {known}.")).param("payment_method"));
        }
    }
    let customer_public = user.customer_public[user.customers.iter().position(|c| *c == customer).expect("a linked customer")];
    Ok(NewPayment { customer, customer_public, money: Money::from_minor(amount, currency), description, payment_method })
}

pub async fn create_payment(req: HttpRequest, payload: web::Payload, user: ApiUser, db: Db, state: State) -> Result<HttpResponse, ApiError> {
    let body = read_object(&req, payload).await?;
    let key = super::key_of(&req, true)?.expect("required");
    let new = new_payment(&body, &user.principal)?;
    let (user_id, limits, now) = (user.principal.id, state.limits, state.clock.now());
    // Everything the answer says is decided here, so the answer is stored with the rows it
    // describes, in the statement (and commit) that writes them (see `intake`).
    let row = repo::PaymentRow {
        id: 0,
        order_id: 0,
        reference: Uuid::new_v4(),
        user_id,
        customer_id: new.customer,
        amount: new.money.amount().clone(),
        amount_refunded: bigdecimal::BigDecimal::from(0),
        currency: new.money.currency(),
        status: crate::payments::PaymentStatus::Pending,
        retryable: true,
        description: new.description.clone(),
        error_code: None,
        error_message: None,
        external_transaction_id: None,
        created_at: chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now),
        customer_name: String::new(),
        customer_public_id: new.customer_public,
        user_email: String::new(),
        user_public_id: user.principal.public_id,
    };
    let answer = views::payment(&row);
    let submitted = repo::NewApiPayment {
        start: crate::orders::batches::ApiPaymentStart {
            user_id,
            customer_id: new.customer,
            money: new.money.clone(),
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
                    &new.money,
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

pub async fn list_payments(req: HttpRequest, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    let query = query(&req, super::PAYMENT_LIST)?;
    let (params, filter) = (query.list(10)?, query.payment_filter()?);
    let visible = user.principal.linked();
    let (rows, has_more) = run(&db, move |conn| Ok(service::payments_page(conn, &visible, &filter, &params)?)).await?;
    Ok(respond(StatusCode::OK, &views::list("/api/v1/payments", rows.iter().map(views::payment).collect(), has_more)))
}

pub async fn get_payment(req: HttpRequest, path: web::Path<String>, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    query(&req, &[])?;
    let reference = payment_reference(&path)?;
    let visible = user.principal.customers.clone();
    let row = run(&db, move |conn| Ok(service::payment(conn, &visible, reference)?)).await?;
    Ok(respond(StatusCode::OK, &views::payment(&row)))
}

pub async fn create_refund(req: HttpRequest, path: web::Path<String>, payload: web::Payload, user: ApiUser, db: Db, state: State) -> Result<HttpResponse, ApiError> {
    let body = read_object(&req, payload).await?;
    body.only(&["amount", "reason"])?;
    let amount = match body.int("amount")? {
        None => None,
        Some(n) if n < 1 => return Err(ApiError::invalid("amount_too_small", "A refund is at least 1 (minor unit).").param("amount")),
        Some(n) if n > MAX_PAYMENT => return Err(ApiError::invalid("amount_too_large", format!("Amount must be at most {MAX_PAYMENT}.")).param("amount")),
        Some(n) => Some(n),
    };
    let reason = match body.string("reason")? {
        None => None,
        Some(raw) => Some(RefundReason::parse(&raw).ok_or_else(|| {
            ApiError::bad_value("reason", "it must be one of duplicate, fraudulent, requested_by_customer")
        })?),
    };
    // The key is judged before the payment is looked up: a request without one is malformed
    // whether or not its payment exists.
    let key = super::key_of(&req, true)?.expect("required");
    let reference = payment_reference(&path)?;
    let (visible, user_id, attempts, now) = (user.principal.customers.clone(), user.principal.id, state.refund_attempts, state.clock.now());
    let response = keyed(&db, &req, &state, &user.principal, &body, true, move |conn| {
        let ask = service::RefundAsk { user_id, minor: amount, reason, idempotency_key: format!("api:{user_id}:{key}") };
        let (payment, refund) = service::refund(conn, &visible, reference, ask, attempts, now)?;
        Ok((StatusCode::CREATED, views::refund(&refund, payment.reference)))
    })
    .await?;
    if response.status() == StatusCode::CREATED {
        state.wake.notify();
    }
    Ok(response)
}

pub async fn list_refunds(req: HttpRequest, path: web::Path<String>, user: ApiUser, db: Db) -> Result<HttpResponse, ApiError> {
    let params = query(&req, super::LIST)?.list(10)?;
    let reference = payment_reference(&path)?;
    let visible = user.principal.customers.clone();
    let (payment, all) = run(&db, move |conn| Ok(service::refunds_of(conn, &visible, reference)?)).await?;
    // Newest first; a payment has few refunds, so the page is cut from all of them.
    let mut all: Vec<_> = all.into_iter().rev().collect();
    let at = |raw: &str, param: &str| {
        all.iter().position(|r| ids::REFUND.show(r.reference) == raw).ok_or_else(|| ApiError::missing_resource("refund", Some(param)))
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
