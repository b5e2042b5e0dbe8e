//! Group commit for `POST /api/v1/payments`: requests that arrive together are written together.
//!
//! Each request decides everything about its payment (reference, answer, timestamps) and hands it
//! to the intake; a few intake threads each take whatever is waiting (up to `MAX_BATCH`) and write
//! the whole batch in one transaction and one commit (`repo::record_answers`, then
//! `orders::pipeline::start_api_payments`: two statements for up to `MAX_BATCH`). A request is
//! answered 201 only after the commit that holds its rows — nothing is acknowledged that a crash
//! could lose — but a hundred requests share one parse, one plan and one WAL flush instead of
//! paying for one each. Under light load a batch is a single request and nothing waits.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use super::repo::{self, NewApiPayment};
use crate::db::PgPool;
use crate::orders::pipeline::{start_api_payments, ApiPaymentStart};
use diesel::Connection;
use crate::jobs::ReadyEstimate;

const MAX_BATCH: usize = 128;
const THREADS: usize = 2;
/// Requests that may wait for an intake thread before the API answers 503.
const BACKLOG: usize = 4_096;

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

struct Waiting {
    payment: NewApiPayment,
    reply: tokio::sync::oneshot::Sender<Intake>,
}

pub struct PaymentIntake {
    sender: SyncSender<Waiting>,
}

impl PaymentIntake {
    pub fn start(pool: PgPool, ready: Arc<ReadyEstimate>, charge_attempts: i32) -> PaymentIntake {
        let (sender, receiver) = sync_channel::<Waiting>(BACKLOG);
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..THREADS {
            let (receiver, pool, ready) = (receiver.clone(), pool.clone(), ready.clone());
            std::thread::Builder::new()
                .name(format!("payment-intake-{n}"))
                .spawn(move || run(&receiver, &pool, &ready, charge_attempts))
                .expect("an intake thread");
        }
        PaymentIntake { sender }
    }

    /// Hands the payment over and waits (without blocking the server's thread) for its commit.
    pub async fn submit(&self, payment: NewApiPayment) -> Intake {
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.sender.try_send(Waiting { payment, reply }) {
            Ok(()) => answer.await.unwrap_or(Intake::Retry),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Intake::Retry,
        }
    }
}

fn run(receiver: &Mutex<Receiver<Waiting>>, pool: &PgPool, ready: &ReadyEstimate, charge_attempts: i32) {
    loop {
        let batch = {
            let receiver = receiver.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let Ok(first) = receiver.recv() else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let outcomes = write(pool, ready, charge_attempts, &batch);
        for (waiting, outcome) in batch.into_iter().zip(outcomes) {
            let _ = waiting.reply.send(outcome); // the request may have gone; its rows stand
        }
    }
}

fn write(pool: &PgPool, ready: &ReadyEstimate, charge_attempts: i32, batch: &[Waiting]) -> Vec<Intake> {
    let every = |outcome| vec![outcome; batch.len()];
    let mut conn = match pool.get() {
        Ok(conn) => conn,
        Err(e) => {
            log::warn!("payment intake: no connection ({e})");
            return every(Intake::Retry);
        }
    };
    match ready.has_room(&mut conn) {
        Ok(true) => {}
        Ok(false) => return every(Intake::QueueFull),
        Err(e) => {
            log::warn!("payment intake: {e}");
            return every(Intake::Retry);
        }
    }
    let payments: Vec<&NewApiPayment> = batch.iter().map(|w| &w.payment).collect();
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
