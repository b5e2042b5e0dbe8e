//! The scripted gateway, for tests: exact outcomes call by call, and counts of every call.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::sim::Ledger;
use super::{Charge, ChargeRequest, GatewayError, GatewayFuture, GatewayRefund, PaymentGateway, RefundRequest};

/// What a scripted gateway does on one `charge` call.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeed,
    Fail(GatewayError),
    /// Takes the money, then the answer is lost on the way back.
    ChargeThenTimeout,
}

/// Exact, repeatable outcomes for tests: a queue of outcomes per call, then a default. It counts
/// every call, so a test can tell "charged once" from "charged twice and deduplicated".
pub struct ScriptedGateway {
    ledger: Ledger,
    script: Mutex<VecDeque<Outcome>>,
    then: Outcome,
    charge_calls: AtomicUsize,
    lookup_calls: AtomicUsize,
    lookups_down: std::sync::atomic::AtomicBool,
    refund_script: Mutex<VecDeque<Outcome>>,
    refund_calls: AtomicUsize,
}

impl ScriptedGateway {
    pub fn succeeding() -> ScriptedGateway {
        ScriptedGateway::script(Vec::new(), Outcome::Succeed)
    }

    /// Plays `first` in order, then `then` for every later call.
    pub fn script(first: Vec<Outcome>, then: Outcome) -> ScriptedGateway {
        ScriptedGateway {
            ledger: Ledger::default(),
            script: Mutex::new(first.into()),
            then,
            charge_calls: AtomicUsize::new(0),
            lookup_calls: AtomicUsize::new(0),
            lookups_down: std::sync::atomic::AtomicBool::new(false),
            refund_script: Mutex::new(VecDeque::new()),
            refund_calls: AtomicUsize::new(0),
        }
    }

    /// What the next refunds do, in order (`ChargeThenTimeout`: refunds, then loses the answer);
    /// after them every refund succeeds.
    pub fn script_refunds(&self, outcomes: Vec<Outcome>) {
        *self.refund_script.lock().unwrap() = outcomes.into();
    }

    pub fn refund_calls(&self) -> usize {
        self.refund_calls.load(Ordering::SeqCst)
    }

    /// Times out the first `n` charges, then succeeds.
    pub fn timing_out_first(n: usize) -> ScriptedGateway {
        ScriptedGateway::script(vec![Outcome::Fail(GatewayError::Timeout); n], Outcome::Succeed)
    }

    pub fn always(error: GatewayError) -> ScriptedGateway {
        ScriptedGateway::script(Vec::new(), Outcome::Fail(error))
    }

    pub fn charge_calls(&self) -> usize {
        self.charge_calls.load(Ordering::SeqCst)
    }

    pub fn lookup_calls(&self) -> usize {
        self.lookup_calls.load(Ordering::SeqCst)
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// While down, every lookup times out: nobody can say what happened to a charge.
    pub fn set_lookups_down(&self, down: bool) {
        self.lookups_down.store(down, Ordering::SeqCst);
    }
}

impl ScriptedGateway {
    /// What the next `charge` does, decided at once (the scripted gateway has no latency).
    pub fn charge_now(&self, request: &ChargeRequest) -> Result<Charge, GatewayError> {
        self.charge_calls.fetch_add(1, Ordering::SeqCst);
        let next = self.script.lock().unwrap().pop_front().unwrap_or_else(|| self.then.clone());
        match next {
            Outcome::Succeed => Ok(self.ledger.record(request)),
            Outcome::Fail(e) => Err(e),
            Outcome::ChargeThenTimeout => {
                self.ledger.record(request);
                Err(GatewayError::Timeout)
            }
        }
    }

    pub fn refund_now(&self, request: &RefundRequest) -> Result<GatewayRefund, GatewayError> {
        self.refund_calls.fetch_add(1, Ordering::SeqCst);
        match self.refund_script.lock().unwrap().pop_front().unwrap_or(Outcome::Succeed) {
            Outcome::Succeed => self.ledger.refund(request),
            Outcome::Fail(e) => Err(e),
            Outcome::ChargeThenTimeout => {
                self.ledger.refund(request)?;
                Err(GatewayError::Timeout)
            }
        }
    }

    pub fn lookup_now(&self, idempotency_key: &str) -> Result<Option<Charge>, GatewayError> {
        self.lookup_calls.fetch_add(1, Ordering::SeqCst);
        if self.lookups_down.load(Ordering::SeqCst) {
            return Err(GatewayError::Timeout);
        }
        Ok(self.ledger.find(idempotency_key))
    }
}

impl PaymentGateway for ScriptedGateway {
    fn charge(self: Arc<Self>, request: ChargeRequest) -> GatewayFuture<Charge> {
        Box::pin(async move { self.charge_now(&request) })
    }

    fn lookup(self: Arc<Self>, idempotency_key: String) -> GatewayFuture<Option<Charge>> {
        Box::pin(async move { self.lookup_now(&idempotency_key) })
    }

    fn refund(self: Arc<Self>, request: RefundRequest) -> GatewayFuture<GatewayRefund> {
        Box::pin(async move { self.refund_now(&request) })
    }

    fn lookup_refund(self: Arc<Self>, idempotency_key: String) -> GatewayFuture<Option<GatewayRefund>> {
        Box::pin(async move {
            self.lookup_calls.fetch_add(1, Ordering::SeqCst);
            if self.lookups_down.load(Ordering::SeqCst) {
                return Err(GatewayError::Timeout);
            }
            Ok(self.ledger.find_refund(&idempotency_key))
        })
    }
}
