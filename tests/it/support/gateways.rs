//! Gateways that misbehave in the ways tests need.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use agora::payments::gateway::{GatewayFuture, GatewayRefund, PaymentGateway, RefundRequest, ScriptedGateway};
use agora::payments::{Charge, ChargeRequest};

/// The methods a misbehaving test gateway leaves to its inner scripted gateway: lookups and
/// refunds answer at once, from the same ledger its charges went to.
macro_rules! answers_the_rest_from_inner {
    () => {
        fn lookup(self: Arc<Self>, key: String) -> GatewayFuture<Option<Charge>> {
            Box::pin(async move { self.inner.lookup_now(&key) })
        }

        fn refund(self: Arc<Self>, request: RefundRequest) -> GatewayFuture<GatewayRefund> {
            Box::pin(async move { self.inner.refund_now(&request) })
        }

        fn lookup_refund(self: Arc<Self>, key: String) -> GatewayFuture<Option<GatewayRefund>> {
            Box::pin(async move { Ok(self.inner.ledger().find_refund(&key)) })
        }
    };
}

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
    fn charge(self: Arc<Self>, request: ChargeRequest) -> GatewayFuture<Charge> {
        Box::pin(async move {
            let charge = self.inner.charge_now(&request)?;
            if self.die.swap(false, Ordering::SeqCst) {
                panic!("the process died right after the gateway charged");
            }
            Ok(charge)
        })
    }

    answers_the_rest_from_inner!();
}

/// Holds every charge until the test opens the gate, and says how many are waiting: a gateway
/// slower than any lease, without a test that waits on real time. Its charges wait as futures, as
/// a real gateway's do, so hundreds can be held at once.
pub struct HeldGateway {
    pub inner: ScriptedGateway,
    open: tokio::sync::watch::Sender<bool>,
    arrived: Mutex<usize>,
    arrival: Condvar,
    /// The most charges held at the same moment.
    high_water: Mutex<usize>,
}

impl HeldGateway {
    pub fn new() -> HeldGateway {
        HeldGateway {
            inner: ScriptedGateway::succeeding(),
            open: tokio::sync::watch::channel(false).0,
            arrived: Mutex::new(0),
            arrival: Condvar::new(),
            high_water: Mutex::new(0),
        }
    }

    /// Waits until `n` charges are being held (or fails the test after a minute).
    pub fn wait_for_arrivals(&self, n: usize) {
        let guard = self.arrived.lock().unwrap();
        let (guard, timeout) = self.arrival.wait_timeout_while(guard, Duration::from_secs(60), |a| *a < n).unwrap();
        assert!(!timeout.timed_out(), "only {} of {n} charges reached the gateway", *guard);
    }

    pub fn release(&self) {
        self.open.send_replace(true);
    }

    pub fn high_water(&self) -> usize {
        *self.high_water.lock().unwrap()
    }
}

impl PaymentGateway for HeldGateway {
    fn charge(self: Arc<Self>, request: ChargeRequest) -> GatewayFuture<Charge> {
        Box::pin(async move {
            {
                let mut arrived = self.arrived.lock().unwrap();
                *arrived += 1;
                let mut high = self.high_water.lock().unwrap();
                *high = (*high).max(*arrived);
            }
            self.arrival.notify_all();
            let mut open = self.open.subscribe();
            let _ = open.wait_for(|o| *o).await;
            *self.arrived.lock().unwrap() -= 1;
            self.inner.charge_now(&request)
        })
    }

    answers_the_rest_from_inner!();
}

/// Holds each charge until the test lets charges go, a number at a time, in the order they came
/// (a fair semaphore): for watching what a worker does while some of its charges have answered
/// and the rest still wait.
pub struct PacedGateway {
    pub inner: ScriptedGateway,
    permits: tokio::sync::Semaphore,
    /// (held now, seen in all, the most held at once)
    counts: Mutex<(usize, usize, usize)>,
    changed: Condvar,
}

impl PacedGateway {
    pub fn new() -> PacedGateway {
        PacedGateway { inner: ScriptedGateway::succeeding(), permits: tokio::sync::Semaphore::new(0), counts: Mutex::new((0, 0, 0)), changed: Condvar::new() }
    }

    /// Lets the `n` longest-held charges (and later ones, if fewer are held) answer.
    pub fn let_go(&self, n: usize) {
        self.permits.add_permits(n);
    }

    /// Waits until `held` charges are held with `seen` seen in all (or fails after a minute).
    pub fn wait_for(&self, held: usize, seen: usize) {
        let guard = self.counts.lock().unwrap();
        let (guard, timeout) = self.changed.wait_timeout_while(guard, Duration::from_secs(60), |c| (c.0, c.1) != (held, seen)).unwrap();
        assert!(!timeout.timed_out(), "{} charges held and {} seen, where {held} and {seen} were awaited", guard.0, guard.1);
    }

    pub fn high_water(&self) -> usize {
        self.counts.lock().unwrap().2
    }

    fn count(&self, change: impl FnOnce(&mut (usize, usize, usize))) {
        change(&mut self.counts.lock().unwrap());
        self.changed.notify_all();
    }
}

impl PaymentGateway for PacedGateway {
    fn charge(self: Arc<Self>, request: ChargeRequest) -> GatewayFuture<Charge> {
        Box::pin(async move {
            self.count(|c| {
                c.0 += 1;
                c.1 += 1;
                c.2 = c.2.max(c.0);
            });
            self.permits.acquire().await.expect("the semaphore is never closed").forget();
            self.count(|c| c.0 -= 1);
            self.inner.charge_now(&request)
        })
    }

    answers_the_rest_from_inner!();
}
