//! The merchants' area: staff linked to customers (merchants) see those customers' payments,
//! balances and ledgers — and nothing else — on server-rendered pages and through a JSON API with
//! bearer tokens and Stripe-style idempotency keys; they refund payments, in part or in full.

pub mod admin;
pub mod api;
pub mod domain;
pub mod error;
pub mod ids;
pub mod intake;
pub mod jobs;
pub mod pages;
pub mod query;
pub mod repo;
pub mod service;
pub mod tokens;

use std::sync::Arc;

use crate::auth::password::HashPool;
use crate::auth::throttle::LoginThrottle;
use crate::clock::Clock;
use crate::jobs::Wake;
use crate::orders::pipeline::{QueueLimits, StartPaymentError};
use crate::payments::refunds::RefundError;
use crate::payments::PaymentError;
use crate::web::AppError;
use error::ApiError;

/// What the merchants' pages and API need, registered as app data by `app::mount`.
pub struct MerchantsState {
    pub clock: Arc<dyn Clock>,
    pub tokens: tokens::TokenKey,
    pub limits: QueueLimits,
    /// Writes API payments in batches (group commit).
    pub intake: Arc<intake::PaymentIntake>,
    pub refund_attempts: i32,
    /// Settles payments by hand (with the orders told, as any settlement).
    pub processor: Arc<crate::payments::PaymentProcessor>,
    pub wake: Arc<Wake>,
    pub logins: Arc<LoginThrottle>,
    pub hashing: Arc<HashPool>,
}

#[derive(Debug, thiserror::Error)]
pub enum MerchantError {
    /// Missing, or not the caller's to see: the same answer either way.
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("no user has that email address")]
    UnknownEmail,
    #[error("a merchant keeps at least one owner; make someone else an owner first")]
    LastOwner,
    #[error("only an owner of this merchant may do that")]
    OwnersOnly,
    #[error("{0}")]
    BadInput(String),
    /// A parameter the request got wrong, as the error object words it (code and `param`).
    #[error("{}", .0.message)]
    Request(ApiError),
    #[error(transparent)]
    Refund(#[from] RefundError),
    #[error(transparent)]
    Start(#[from] StartPaymentError),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

impl From<MerchantError> for ApiError {
    fn from(e: MerchantError) -> Self {
        match e {
            MerchantError::NotFound(what) => ApiError::missing_resource(what, None),
            MerchantError::UnknownEmail => ApiError::missing_resource("user", Some("email")),
            MerchantError::BadInput(why) => ApiError::invalid("parameter_invalid", why),
            MerchantError::Request(e) => e,
            MerchantError::LastOwner => {
                ApiError::conflict("last_owner", "This is the customer's last owner; make someone else an owner first.")
            }
            MerchantError::OwnersOnly => ApiError::forbidden("owner_required", "Only an owner of this customer may manage its details and staff."),
            MerchantError::Refund(e) => match e {
                RefundError::PaymentNotFound => ApiError::missing_resource("payment", None),
                RefundError::NotRefundable(_) => ApiError::refused("payment_not_refundable", e.to_string()),
                RefundError::AlreadyRefunded => ApiError::refused("payment_already_refunded", e.to_string()),
                RefundError::AmountTooLarge { .. } => ApiError::refused("amount_too_large", e.to_string()).param("amount"),
                RefundError::InsufficientBalance { .. } => ApiError::refused("balance_insufficient", e.to_string()).param("amount"),
                RefundError::WrongCurrency(_) => ApiError::invalid("currency_mismatch", e.to_string()).param("amount"),
                RefundError::KeyReused => ApiError::idempotency(
                    actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "This Idempotency-Key was used for a refund of another payment; use a new key.",
                ),
                RefundError::Database(e) => e.into(),
            },
            MerchantError::Start(StartPaymentError::Full(full)) => ApiError::unavailable(format!("the payments queue holds {} jobs", full.limit)),
            MerchantError::Start(StartPaymentError::Payment(PaymentError::Database(e))) => e.into(),
            MerchantError::Start(StartPaymentError::Payment(e)) => ApiError::internal(e),
            MerchantError::Database(e) => e.into(),
        }
    }
}

impl From<MerchantError> for AppError {
    fn from(e: MerchantError) -> Self {
        match e {
            MerchantError::NotFound(_) => AppError::NotFound,
            MerchantError::Request(e) if e.status.as_u16() == 404 => AppError::NotFound,
            MerchantError::Database(e) | MerchantError::Refund(RefundError::Database(e)) => e.into(),
            MerchantError::Refund(RefundError::PaymentNotFound) => AppError::NotFound,
            MerchantError::Start(StartPaymentError::Full(_)) => AppError::Busy { retry_after: 5 },
            other => AppError::BadRequest(other.to_string()),
        }
    }
}
