//! The payment gateway as a strategy: the processor only knows this trait. Its implementations are
//! the simulated gateway (`sim`: random outcomes, for demos), the scripted one (`scripted`: exact
//! outcomes, for tests) and `http`, which talks to a Stripe-like API over HTTP.
//!
//! Calls are asynchronous: a charge waiting on a gateway that answers in 300 ms is a small future
//! on the `GatewayRuntime`, not a thread, so hundreds can be in flight at once.

pub mod http;
pub mod scripted;
pub mod sim;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::money::Money;
use crate::config::GatewayConfig;

pub use http::HttpGateway;
pub use scripted::{Outcome, ScriptedGateway};
pub use sim::{Latency, Ledger, SimulatedGateway, Simulation};

#[derive(Debug, Clone)]
pub struct ChargeRequest {
    pub idempotency_key: String,
    pub money: Money,
    /// A test card the simulations understand (see `TestCard`); real gateways take a token here.
    pub payment_method: Option<String>,
}

/// Give back part or all of a charge.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub idempotency_key: String,
    pub charge_id: String,
    pub money: Money,
}

/// Money the gateway has given back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayRefund {
    pub id: String,
    pub idempotency_key: String,
    pub charge: String,
    pub amount: BigDecimal,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

/// Stripe's test payment methods, understood by the simulation and `gateway-sim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestCard {
    /// Always approved; its refunds succeed.
    Visa,
    /// Always declined with `card_declined`.
    ChargeDeclined,
}

impl TestCard {
    pub const METHODS: [&'static str; 2] = ["pm_card_visa", "pm_card_chargeDeclined"];

    pub fn parse(method: Option<&str>) -> Option<TestCard> {
        match method? {
            "pm_card_visa" => Some(TestCard::Visa),
            "pm_card_chargeDeclined" => Some(TestCard::ChargeDeclined),
            _ => None,
        }
    }
}

/// Money the gateway has taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub idempotency_key: String,
    pub amount: BigDecimal,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclineCode {
    InvalidCard,
    InsufficientFunds,
    CardDeclined,
    /// A refund for a charge the gateway does not know.
    ChargeNotFound,
    /// A refund larger than what remains of its charge.
    RefundExceedsCharge,
}

impl DeclineCode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineCode::InvalidCard => "invalid_card",
            DeclineCode::InsufficientFunds => "insufficient_funds",
            DeclineCode::CardDeclined => "card_declined",
            DeclineCode::ChargeNotFound => "charge_not_found",
            DeclineCode::RefundExceedsCharge => "refund_exceeds_charge",
        }
    }

    pub fn parse(code: &str) -> DeclineCode {
        match code {
            "invalid_card" => DeclineCode::InvalidCard,
            "insufficient_funds" => DeclineCode::InsufficientFunds,
            "charge_not_found" => DeclineCode::ChargeNotFound,
            "refund_exceeds_charge" => DeclineCode::RefundExceedsCharge,
            _ => DeclineCode::CardDeclined,
        }
    }

    pub fn default_message(self) -> &'static str {
        match self {
            DeclineCode::InvalidCard => "Invalid card number",
            DeclineCode::InsufficientFunds => "Insufficient funds",
            DeclineCode::CardDeclined => "The card was declined",
            DeclineCode::ChargeNotFound => "No such charge",
            DeclineCode::RefundExceedsCharge => "The refund is larger than what remains of the charge",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayError {
    /// No answer in time: the charge may or may not have happened.
    #[error("Gateway timeout")]
    Timeout,
    /// The request was sent and the gateway failed while handling it (500, 502, a reset
    /// connection): the charge may or may not have happened.
    #[error("Gateway error: {0}")]
    Ambiguous(String),
    /// The gateway did not take the request (503, 429, connection refused): nothing was charged.
    #[error("Gateway unavailable: {0}")]
    Unavailable(String),
    /// The gateway refused the charge for good; asking again gives the same answer.
    #[error("{message}")]
    Declined { code: DeclineCode, message: String },
}

impl GatewayError {
    pub fn declined(code: DeclineCode) -> GatewayError {
        GatewayError::Declined { code, message: code.default_message().to_string() }
    }

    pub fn is_transient(&self) -> bool {
        !matches!(self, GatewayError::Declined { .. })
    }

    /// Whether money may have been taken although no charge came back: only a lookup can tell.
    pub fn may_have_charged(&self) -> bool {
        matches!(self, GatewayError::Timeout | GatewayError::Ambiguous(_))
    }

    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Timeout => "gateway_timeout",
            GatewayError::Ambiguous(_) => "gateway_error",
            GatewayError::Unavailable(_) => "gateway_unavailable",
            GatewayError::Declined { code, .. } => code.as_str(),
        }
    }
}

/// What a gateway call gives back, some time later.
pub type GatewayFuture<T> = Pin<Box<dyn Future<Output = Result<T, GatewayError>> + Send + 'static>>;

pub trait PaymentGateway: Send + Sync + 'static {
    /// Takes the money. Calling it again with the same key must not take it twice.
    fn charge(self: Arc<Self>, request: ChargeRequest) -> GatewayFuture<Charge>;
    /// Finds the charge made under this key, if any: how a lost answer is recovered.
    fn lookup(self: Arc<Self>, idempotency_key: String) -> GatewayFuture<Option<Charge>>;
    /// Gives money back. Calling it again with the same key must not give it back twice.
    fn refund(self: Arc<Self>, request: RefundRequest) -> GatewayFuture<GatewayRefund>;
    /// Finds the refund made under this key, if any.
    fn lookup_refund(self: Arc<Self>, idempotency_key: String) -> GatewayFuture<Option<GatewayRefund>>;
}

/// The gateway the configuration asks for.
pub fn from_config(config: &GatewayConfig) -> Arc<dyn PaymentGateway> {
    match config {
        GatewayConfig::Simulated { success_rate, timeout_rate, latency, jitter, seed } => Arc::new(SimulatedGateway::new(
            Simulation::new(*success_rate, *timeout_rate, *seed),
            Latency { latency: *latency, jitter: *jitter },
        )),
        GatewayConfig::Http { base_url, timeout } => {
            Arc::new(HttpGateway::new(base_url, *timeout))
        }
    }
}
