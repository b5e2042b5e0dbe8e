//! Gateways that misbehave in the ways tests need.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use agora::payments::gateway::{PaymentGateway, ScriptedGateway};
use agora::payments::{Charge, ChargeRequest, GatewayError};

/// Takes the money, then (once) the process dies before the answer is saved: the worker thread
/// panics with its connection, as a killed process would leave things.
pub struct ChargeThenDie {
    pub inner: ScriptedGateway,
    die: AtomicBool,
}

impl ChargeThenDie {
    pub fn new() -> ChargeThenDie {
        ChargeThenDie { inner: ScriptedGateway::succeeding(), die: AtomicBool::new(true) }
    }
}

impl PaymentGateway for ChargeThenDie {
    fn charge(&self, request: &ChargeRequest<'_>) -> Result<Charge, GatewayError> {
        let charge = self.inner.charge(request)?;
        if self.die.swap(false, Ordering::SeqCst) {
            panic!("the process died right after the gateway charged");
        }
        Ok(charge)
    }

    fn lookup(&self, key: &str) -> Result<Option<Charge>, GatewayError> {
        self.inner.lookup(key)
    }
}

/// Holds every charge until the test opens the gate, and says when each one arrives: a gateway
/// slower than any lease, without a test that waits on real time.
pub struct HeldGateway {
    pub inner: ScriptedGateway,
    open: Mutex<bool>,
    opened: Condvar,
    arrived: Mutex<usize>,
    arrival: Condvar,
}

impl HeldGateway {
    pub fn new() -> HeldGateway {
        HeldGateway {
            inner: ScriptedGateway::succeeding(),
            open: Mutex::new(false),
            opened: Condvar::new(),
            arrived: Mutex::new(0),
            arrival: Condvar::new(),
        }
    }

    /// Waits until `n` charges are being held (or fails the test after a minute).
    pub fn wait_for_arrivals(&self, n: usize) {
        let guard = self.arrived.lock().unwrap();
        let (guard, timeout) = self.arrival.wait_timeout_while(guard, Duration::from_secs(60), |a| *a < n).unwrap();
        assert!(!timeout.timed_out(), "only {} of {n} charges reached the gateway", *guard);
    }

    pub fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl PaymentGateway for HeldGateway {
    fn charge(&self, request: &ChargeRequest<'_>) -> Result<Charge, GatewayError> {
        *self.arrived.lock().unwrap() += 1;
        self.arrival.notify_all();
        drop(self.opened.wait_while(self.open.lock().unwrap(), |open| !*open).unwrap());
        self.inner.charge(request)
    }

    fn lookup(&self, key: &str) -> Result<Option<Charge>, GatewayError> {
        self.inner.lookup(key)
    }
}
