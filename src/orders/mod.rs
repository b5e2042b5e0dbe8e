//! Orders: what a user has bought from a merchant, and the checkout page that pays for it.

pub mod demo;
pub mod batches;
pub mod pay_intake;
pub mod pipeline;
pub mod repo;
pub mod routes;

use std::sync::Arc;

/// What the shop's pages need, registered as app data by `app::mount`.
pub struct OrdersState {
    pub clock: Arc<dyn crate::clock::Clock>,
    pub limits: pipeline::QueueLimits,
    pub max_unpaid_orders: i64,
    /// Wakes this process's workers when a payment is queued.
    pub wake: Arc<crate::jobs::Wake>,
    /// How long an unpaid order holds its stock (`ORDER_TTL_SECS`), as the checkout says.
    pub hold: std::time::Duration,
    /// Pay's group commit.
    pub pay: Arc<pay_intake::PayIntake>,
}

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("an order needs at least one item")]
    Empty,
    #[error("product {0} does not exist")]
    UnknownProduct(i64),
    #[error("an order's items must all come from one merchant")]
    MixedMerchants,
    #[error("quantities must be between 1 and 1000")]
    BadQuantity,
    #[error("only {left} left of {product}")]
    OutOfStock { product: String, left: i32 },
    #[error("you already have {max} unpaid orders: pay for one of them, or let one expire, before placing another")]
    TooManyUnpaid { max: i64 },
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

impl From<OrderError> for crate::web::AppError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::Database(e) => e.into(),
            other => crate::web::AppError::BadRequest(other.to_string()),
        }
    }
}
