//! Group commit for `POST /api/v1/payments` (`db::group_commit`): each request decides everything
//! about its payment (reference, answer, timestamps) and hands it over; a batch of up to
//! `MAX_BATCH` is written in one transaction and one commit (`repo::record_answers`, then
//! `orders::batches::start_api_payments`: two statements). A request is answered 201 only after
//! the commit that holds its rows.

use std::sync::Arc;

use super::repo::{self, NewApiPayment};
use crate::db::group_commit::{GroupCommit, Shape};
use crate::db::PgPool;
use crate::orders::batches::{start_api_payments, ApiPaymentStart};
use diesel::Connection;
use crate::jobs::queue::Admission;
use crate::jobs::ReadyEstimate;

const SHAPE: Shape = Shape { name: "payment-intake", threads: 2, max_batch: 128, backlog: 4_096 };

/// What became of one submitted payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    Created,
    /// Its idempotency key was taken: the general path decides (replay, 409, 422, expiry).
    KeyTaken,
    QueueFull,
    /// The batch could not be written (or the intake is saturated): the general path tries this
    /// request alone.
    Retry,
}

pub struct PaymentIntake {
    writers: GroupCommit<NewApiPayment, Intake>,
}

impl PaymentIntake {
    pub fn start(pool: PgPool, ready: Arc<ReadyEstimate>, charge_attempts: i32) -> PaymentIntake {
        PaymentIntake { writers: GroupCommit::start(SHAPE, move |batch| write(&pool, &ready, charge_attempts, batch)) }
    }

    /// Hands the payment over and waits (without blocking the server's thread) for its commit.
    pub async fn submit(&self, payment: NewApiPayment) -> Intake {
        self.writers.submit(payment).await.unwrap_or(Intake::Retry)
    }
}

fn write(pool: &PgPool, ready: &ReadyEstimate, charge_attempts: i32, batch: &[NewApiPayment]) -> Vec<Intake> {
    let every = |outcome| vec![outcome; batch.len()];
    let mut conn = match ready.admit_from(pool, batch.len(), "payment intake") {
        Admission::Admitted(conn) => conn,
        Admission::Full => return every(Intake::QueueFull),
        Admission::Unavailable => return every(Intake::Retry),
    };
    let payments: Vec<&NewApiPayment> = batch.iter().collect();
    let written = conn.transaction(|conn| {
        let free = repo::record_answers(conn, &payments)?;
        let starts: Vec<ApiPaymentStart> = payments.iter().zip(&free).filter(|(_, free)| **free).map(|(p, _)| p.start.clone()).collect();
        start_api_payments(conn, &starts, charge_attempts)?;
        Ok::<_, diesel::result::Error>(free)
    });
    match written {
        Ok(free) => free.into_iter().map(|free| if free { Intake::Created } else { Intake::KeyTaken }).collect(),
        Err(e) => {
            log::warn!("payment intake: a batch of {} could not be written, each is tried alone: {e}", batch.len());
            every(Intake::Retry)
        }
    }
}
