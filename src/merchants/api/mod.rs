//! The merchants' JSON API under `/api/v1`: Stripe's shapes (list object, error object,
//! `Idempotency-Key`), bearer tokens, and the same visibility as the dashboard. The route table
//! below both mounts the handlers and writes the OpenAPI document, so the two cannot drift.

pub mod handlers;
pub mod input;
pub mod views;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use diesel::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::pin::Pin;

use super::repo::{self, KeyState, Principal};
use super::tokens::{bearer, Claims};
use super::MerchantsState;
use crate::web::Db;
use super::error::ApiError;
use crate::payments::gateway::TestCard;
use crate::web::openapi::{Body, Field, Table, Ty};
use input::Object;

const LIMIT: Field = Field::optional("limit", Ty::Int { min: 1, max: 100 }).about("How many objects, 1 to 100 (10 by default)");
const STARTING_AFTER: Field = Field::optional("starting_after", Ty::Text).about("An object's id: the page of older objects after it");
const ENDING_BEFORE: Field = Field::optional("ending_before", Ty::Text).about("An object's id: the page of newer objects before it");
const LIST: &[Field] = &[LIMIT, STARTING_AFTER, ENDING_BEFORE];
/// Unix seconds from 1970 to the end of 9999.
const UNIX: Ty = Ty::Int { min: 0, max: super::domain::MAX_UNIX };
const PAYMENT_LIST: &[Field] = &[
    LIMIT,
    STARTING_AFTER,
    ENDING_BEFORE,
    Field::optional("customer", Ty::Text).about("A customer's id (cus_…)"),
    Field::optional("user", Ty::Text).about("The paying user's id (usr_…)"),
    Field::optional("reference", Ty::Text).about("A payment's id"),
    Field::optional("status", Ty::OneOf(&["pending", "processing", "completed", "failed", "requires_confirmation"])),
    Field::optional("created[gt]", UNIX),
    Field::optional("created[gte]", UNIX),
    Field::optional("created[lt]", UNIX),
    Field::optional("created[lte]", UNIX),
    Field::optional("from", Ty::Date).about("The first day (UTC) of the range"),
    Field::optional("to", Ty::Date).about("The last day (UTC) of the range"),
    Field::optional("amount[gte]", Ty::Int { min: i64::MIN, max: i64::MAX }),
    Field::optional("amount[lte]", Ty::Int { min: i64::MIN, max: i64::MAX }),
];
const COUNTRY: Ty = Ty::Pattern("^[A-Za-z]{2}$");
const NAME: Ty = Ty::Words { max: super::domain::NAME_MAX };
const AMOUNT: Ty = Ty::Int { min: super::domain::MIN_PAYMENT, max: super::domain::MAX_PAYMENT };
const CURRENCY: Ty = Ty::Pattern("^([uU][sS][dD]|[eE][uU][rR]|[gG][bB][pP]|[dD][kK][kK])$");

/// A body of exactly these fields (others are refused); required when one of them is.
const fn closed(fields: &'static [Field]) -> Option<Body> {
    let (mut required, mut i) = (false, 0);
    while i < fields.len() {
        required |= fields[i].required;
        i += 1;
    }
    Some(Body { fields, closed: true, required })
}

crate::api_routes! {
    prefixes: [""];
    post "/auth/token" => handlers::create_token {
        summary: "Exchange an email and password for a bearer token",
        body: closed(&[
            Field::required("email", Ty::Plain { max: handlers::MAX_EMAIL }),
            Field::required("password", Ty::Plain { max: handlers::MAX_PASSWORD }),
            Field::nullable("expires_in", Ty::Int { min: 1, max: 86_400 }).about("Seconds, 3600 by default"),
        ]),
        public: true, answer: Some("Token"),
    }
    delete "/auth/token" => handlers::revoke_token { summary: "Revoke the token presented", status: 204 }
    get "/me" => handlers::me { summary: "The signed-in user and the customers they are linked to", answer: Some("User") }
    post "/customers" => handlers::create_customer {
        summary: "Create a customer linked to the caller",
        body: closed(&[Field::required("name", NAME), Field::nullable("country", COUNTRY).about("ISO 3166-1 alpha-2")]),
        status: 201, answer: Some("Customer"),
    }
    get "/customers" => handlers::list_customers { summary: "List the customers the caller is linked to", query: LIST, answer: Some("CustomerList") }
    get "/customers/{id}" => handlers::get_customer { summary: "Retrieve a customer", answer: Some("Customer") }
    patch "/customers/{id}" => handlers::update_customer {
        summary: "Update a customer (owners only)",
        body: closed(&[Field::nullable("name", NAME), Field::nullable("country", COUNTRY).about("null clears it")]),
        answer: Some("Customer"),
    }
    post "/customers/{id}/users" => handlers::link_user {
        summary: "Link a user (by email) to a customer, or give a linked user another role (owners only)",
        body: closed(&[
            Field::required("email", Ty::Plain { max: handlers::MAX_EMAIL }),
            Field::nullable("role", Ty::OneOf(&["owner", "member"])).about("member by default; owners manage the customer and its staff"),
        ]),
        answer: Some("Customer"),
    }
    delete "/customers/{id}/users/{user_id}" => handlers::unlink_user {
        summary: "Unlink a user from a customer (owners; a member may unlink themselves); the last owner stays",
        answer: Some("Customer"),
    }
    get "/customers/{id}/balance" => handlers::balance { summary: "A customer's available balance per currency", answer: Some("Balance") }
    get "/customers/{id}/balance_transactions" => handlers::balance_transactions { summary: "A customer's ledger, newest first", query: LIST, answer: Some("BalanceTransactionList") }
    post "/payments" => handlers::create_payment {
        summary: "Create a payment (processed asynchronously)",
        body: closed(&[
            Field::required("customer", Ty::Text).about("The customer's id (cus_…)"),
            Field::required("amount", AMOUNT).about("Minor units"),
            Field::required("currency", CURRENCY),
            Field::nullable("description", Ty::Plain { max: 500 }),
            Field::nullable("payment_method", Ty::OneOf(&TestCard::METHODS)),
        ]),
        keyed: true, status: 201, answer: Some("Payment"),
    }
    get "/payments" => handlers::list_payments { summary: "List payments, newest first, with filters", query: PAYMENT_LIST, answer: Some("PaymentList") }
    get "/payments/{id}" => handlers::get_payment { summary: "Retrieve a payment", answer: Some("Payment") }
    post "/payments/{id}/refunds" => handlers::create_refund {
        summary: "Refund a completed payment in part or in full",
        body: closed(&[
            Field::nullable("amount", Ty::Int { min: 1, max: super::domain::MAX_PAYMENT }).about("Minor units; what remains by default"),
            Field::nullable("reason", Ty::OneOf(&["duplicate", "fraudulent", "requested_by_customer"])),
        ]),
        keyed: true, status: 201, answer: Some("Refund"),
    }
    get "/payments/{id}/refunds" => handlers::list_refunds { summary: "List a payment's refunds", query: LIST, answer: Some("RefundList") }
}

/// The merchants' API in the document, and its answers to requests no route takes.
pub static TABLE: Table = Table {
    prefixes: PREFIXES,
    routes: ROUTES,
    schemas: views::schemas,
    error: "Error",
    refuse: |status| {
        let error = if status == StatusCode::METHOD_NOT_ALLOWED { ApiError::method_not_allowed() } else { ApiError::no_route() };
        actix_web::ResponseError::error_response(&error)
    },
    headers: &[],
};

/// The caller, authenticated by a bearer token whose user, links and revocation are read from the
/// database on every request (one query): unlinking or revoking applies to the very next request.
pub struct ApiUser {
    pub principal: Principal,
    pub claims: Claims,
}

impl FromRequest for ApiUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<ApiUser, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { bearer(&req).await.map(|(principal, claims)| ApiUser { principal, claims }) })
    }
}

/// Runs blocking database work for the API, keeping its error as the API's.
pub async fn run<T, F>(db: &Db, work: F) -> Result<T, ApiError>
where
    F: FnOnce(&mut PgConnection) -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    db.run(move |conn| Ok::<_, crate::web::AppError>(work(conn))).await.map_err(ApiError::from)?
}

pub fn respond(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status).insert_header((header::CACHE_CONTROL, "no-store")).json(body)
}

/// The request's `Idempotency-Key`, checked: 1–255 printable ASCII characters.
fn idempotency_key(req: &HttpRequest, required: bool) -> Result<Option<String>, ApiError> {
    let Some(raw) = req.headers().get("Idempotency-Key") else {
        return if required {
            Err(ApiError::invalid("idempotency_key_missing", "This request needs an Idempotency-Key header.").param("Idempotency-Key"))
        } else {
            Ok(None)
        };
    };
    let key = raw.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x20..0x7f).contains(&b)));
    match key {
        Some(key) => Ok(Some(key.to_string())),
        None => Err(ApiError::invalid("idempotency_key_invalid", "An Idempotency-Key is 1 to 255 printable ASCII characters.")
            .param("Idempotency-Key")),
    }
}

/// What makes two requests "the same" under one key: method, path and the parsed body (so key
/// order and whitespace do not matter).
pub fn fingerprint(req: &HttpRequest, body: &Object) -> String {
    let mut hash = Sha256::new();
    hash.update(format!("{} {}\n{}", req.method(), req.path(), body.canonical()));
    format!("{:x}", hash.finalize())
}

/// The request's `Idempotency-Key` if it has a valid one (for handlers with a fast path).
pub fn key_of(req: &HttpRequest, required: bool) -> Result<Option<String>, ApiError> {
    idempotency_key(req, required)
}

/// Runs a request's work (in one transaction) under Stripe's idempotency rules. Parameters are
/// checked before this is called, so their complaints are never stored. With a key: the same
/// request again gets the stored answer (`Idempotent-Replayed: true`); another request under the
/// same key gets 422; one while the first still runs gets 409. The answer is stored in the same
/// transaction as the work, so a crash leaves both or neither.
pub async fn keyed<F>(db: &Db, req: &HttpRequest, state: &MerchantsState, user: &Principal, body: &Object, required: bool, work: F) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(&mut PgConnection) -> Result<(StatusCode, Value), ApiError> + Send + 'static,
{
    let Some(key) = idempotency_key(req, required)? else {
        let (status, value) = run(db, move |conn| conn.transaction(work)).await?;
        return Ok(respond(status, &value));
    };
    let fingerprint = fingerprint(req, body);
    let now = state.clock.now();
    let (user_id, claim_key) = (user.id, key.clone());
    let state_of_key = run(db, move |conn| {
        let lock_until = now + chrono::Duration::seconds(60);
        Ok(repo::claim_key(conn, user_id, &claim_key, &fingerprint, now, lock_until, now - chrono::Duration::hours(24))?)
    })
    .await?;
    match state_of_key {
        KeyState::Fresh => {}
        KeyState::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            return Ok(HttpResponse::build(status)
                .insert_header(("Idempotent-Replayed", "true"))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .content_type("application/json")
                .body(body));
        }
        KeyState::InFlight => {
            return Err(ApiError::idempotency(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is still being processed; retry in a moment.",
            ))
        }
        KeyState::Mismatch => {
            return Err(ApiError::idempotency(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "This Idempotency-Key was used for a different request; use a new key.",
            ))
        }
    }
    let stored_key = key.clone();
    let outcome = run(db, move |conn| {
        conn.transaction(|conn| {
            let (status, value) = work(conn)?;
            repo::store_answer(conn, user_id, &stored_key, status.as_u16(), &value.to_string())?;
            Ok((status, value))
        })
    })
    .await;
    match outcome {
        Ok((status, value)) => Ok(respond(status, &value)),
        Err(error) => {
            let (answer, stored) = (error.clone(), error.is_stored());
            let forget = run(db, move |conn| {
                if stored {
                    Ok(repo::store_answer(conn, user_id, &key, answer.status.as_u16(), &answer.body().to_string())?)
                } else {
                    Ok(repo::release_key(conn, user_id, &key)?)
                }
            })
            .await;
            if let Err(e) = forget {
                log::warn!("could not settle an idempotency key after an error: {e}");
            }
            Err(error)
        }
    }
}
