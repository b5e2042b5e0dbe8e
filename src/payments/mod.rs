//! Payments that charge exactly once: the domain types, the gateway strategies, the processor
//! that drives a payment through its states, and the pages that show it.

pub mod admin;
pub mod breaker;
pub mod demo;
pub mod domain;
pub mod fraud;
pub mod gateway;
pub mod money;
pub mod processor;
pub mod refunds;
pub mod repo;
pub mod routes;
pub mod runtime;
pub mod sim_server;

pub use domain::{IdempotencyKey, PayOrder, PaymentStatus};
pub use money::{Currency, Money};
pub use gateway::{Charge, ChargeRequest, GatewayError, PaymentGateway};
pub use processor::PaymentProcessor;
pub use repo::{Payment, PaymentEvent};

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("no payable order with that id")]
    OrderNotFound,
    #[error("no payment with that reference")]
    PaymentNotFound,
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

impl From<PaymentError> for crate::web::AppError {
    fn from(e: PaymentError) -> Self {
        match e {
            PaymentError::OrderNotFound | PaymentError::PaymentNotFound => crate::web::AppError::NotFound,
            PaymentError::Database(e) => e.into(),
        }
    }
}
