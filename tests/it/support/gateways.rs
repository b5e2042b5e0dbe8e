//! Gateways that misbehave in the ways tests need.

use std::sync::atomic::{AtomicBool, Ordering};

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
