//! `agora gateway-sim`: a small HTTP server that plays a Stripe-like charges API over the
//! simulation, and serves its ledger at `GET /charges` so tests can count charges per order.

use actix_web::{dev::Server, web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Deserialize;
use serde_json::json;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::domain::IdempotencyKey;
use super::money::{Currency, Money};
use super::gateway::{ChargeRequest, GatewayError, Latency, RefundRequest, Simulation};

struct SimState {
    simulation: Arc<Simulation>,
    latency: Latency,
    /// Charges being answered right now, and the most there ever were at once.
    in_flight: AtomicUsize,
    in_flight_max: AtomicUsize,
}

/// Counts a charge in flight for as long as it lives.
struct InFlight<'a>(&'a SimState);

impl<'a> InFlight<'a> {
    fn new(state: &'a SimState) -> InFlight<'a> {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.in_flight_max.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Deserialize)]
struct NewCharge {
    amount: String,
    currency: String,
    payment_method: Option<String>,
}

#[derive(Deserialize)]
struct NewRefund {
    charge: String,
    amount: String,
    currency: String,
}

#[derive(Deserialize)]
struct LookupQuery {
    idempotency_key: Option<String>,
}

fn error(status: actix_web::http::StatusCode, kind: &str, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": { "type": kind, "code": code, "message": message } }))
}

/// The request's idempotency key and money, or the 400 that refuses it.
fn key_and_money(req: &HttpRequest, amount: &str, currency: &str) -> Result<(IdempotencyKey, Money), Box<HttpResponse>> {
    use actix_web::http::StatusCode;
    let key = req.headers().get("Idempotency-Key").and_then(|v| v.to_str().ok()).and_then(IdempotencyKey::parse);
    let Some(key) = key else {
        return Err(Box::new(error(StatusCode::BAD_REQUEST, "invalid_request_error", "missing_idempotency_key", "Idempotency-Key header is required")));
    };
    let Some(currency) = Currency::parse(currency) else {
        return Err(Box::new(error(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_currency", "currency is a three-letter code")));
    };
    match Money::parse(amount, currency) {
        Ok(money) => Ok((key, money)),
        Err(e) => Err(Box::new(error(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_amount", &e.to_string()))),
    }
}

async fn create_charge(req: HttpRequest, body: web::Json<NewCharge>, state: web::Data<SimState>) -> HttpResponse {
    let (key, money) = match key_and_money(&req, &body.amount, &body.currency) {
        Ok(parsed) => parsed,
        Err(refused) => return *refused,
    };
    let _counted = InFlight::new(&state);
    state.latency.wait().await;
    let request = ChargeRequest {
        idempotency_key: key.as_str().to_string(),
        money,
        payment_method: body.payment_method.clone(),
    };
    answer(state.simulation.charge(&request))
}

fn answer<T: serde::Serialize>(result: Result<T, GatewayError>) -> HttpResponse {
    use actix_web::http::StatusCode;
    match result {
        Ok(done) => HttpResponse::Ok().json(done),
        Err(GatewayError::Declined { code, message }) => error(StatusCode::PAYMENT_REQUIRED, "card_error", code.as_str(), &message),
        Err(GatewayError::Timeout) => error(StatusCode::GATEWAY_TIMEOUT, "api_error", "gateway_timeout", "Gateway timeout"),
        Err(GatewayError::Unavailable(why)) => error(StatusCode::SERVICE_UNAVAILABLE, "api_error", "unavailable", &why),
        Err(GatewayError::Ambiguous(why)) => error(StatusCode::BAD_GATEWAY, "api_error", "gateway_error", &why),
    }
}

async fn create_refund(req: HttpRequest, body: web::Json<NewRefund>, state: web::Data<SimState>) -> HttpResponse {
    let (key, money) = match key_and_money(&req, &body.amount, &body.currency) {
        Ok(parsed) => parsed,
        Err(refused) => return *refused,
    };
    state.latency.wait().await;
    let request = RefundRequest {
        idempotency_key: key.as_str().to_string(),
        charge_id: body.charge.clone(),
        money,
    };
    answer(state.simulation.ledger().refund(&request))
}

async fn find_refunds(query: web::Query<LookupQuery>, state: web::Data<SimState>) -> HttpResponse {
    let ledger = state.simulation.ledger();
    let data: Vec<_> = match &query.idempotency_key {
        Some(key) => ledger.find_refund(key).into_iter().collect(),
        None => ledger.refunds(),
    };
    HttpResponse::Ok().json(json!({ "data": data }))
}

async fn find_charges(query: web::Query<LookupQuery>, state: web::Data<SimState>) -> HttpResponse {
    let ledger = state.simulation.ledger();
    let data = match &query.idempotency_key {
        Some(key) => ledger.find(key).into_iter().collect(),
        None => ledger.all(),
    };
    HttpResponse::Ok().json(json!({ "data": data }))
}

/// How busy the simulation has been: for benchmarks, which read the in-flight high-water mark.
async fn stats(state: web::Data<SimState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "charges": state.simulation.ledger().all().len(),
        "refunds": state.simulation.ledger().refunds().len(),
        "in_flight": state.in_flight.load(Ordering::SeqCst),
        "in_flight_max": state.in_flight_max.load(Ordering::SeqCst),
    }))
}

#[derive(Deserialize)]
struct Imported {
    data: Vec<super::gateway::Charge>,
}

/// Takes charges made before this process started into the ledger (`make run` registers the demo
/// data's history here, so that a newcomer's first refund finds its charge).
async fn import_charges(body: web::Json<Imported>, state: web::Data<SimState>) -> HttpResponse {
    let ledger = state.simulation.ledger();
    let imported = body.into_inner().data.into_iter().filter(|c| ledger.import(c.clone())).count();
    HttpResponse::Ok().json(json!({ "imported": imported }))
}

async fn all_charges(state: web::Data<SimState>) -> HttpResponse {
    let charges = state.simulation.ledger().all();
    HttpResponse::Ok().json(json!({ "count": charges.len(), "charges": charges }))
}

pub fn run(listener: TcpListener, simulation: Arc<Simulation>, latency: Latency) -> std::io::Result<Server> {
    let state = web::Data::new(SimState { simulation, latency, in_flight: AtomicUsize::new(0), in_flight_max: AtomicUsize::new(0) });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/v1/charges", web::post().to(create_charge))
            .route("/v1/charges", web::get().to(find_charges))
            .route("/v1/refunds", web::post().to(create_refund))
            .route("/v1/refunds", web::get().to(find_refunds))
            .route("/charges", web::get().to(all_charges))
            .route("/charges", web::post().to(import_charges))
            .route("/stats", web::get().to(stats))
    })
    .workers(2)
    .listen(listener)?
    .run();
    Ok(server)
}
