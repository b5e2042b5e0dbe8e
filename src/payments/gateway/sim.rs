//! The simulated gateway: a ledger that remembers one charge per idempotency key, random outcomes
//! at configured rates (test cards decide theirs), and a latency to play a real gateway's.

use bigdecimal::BigDecimal;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Charge, ChargeRequest, DeclineCode, GatewayError, GatewayFuture, GatewayRefund, PaymentGateway, RefundRequest, TestCard};

/// The charges and refunds a fake gateway has made, one per idempotency key, in order, stamped
/// by its clock.
pub struct Ledger {
    charges: Mutex<(Vec<Charge>, HashMap<String, usize>)>,
    refunds: Mutex<Vec<GatewayRefund>>,
    clock: Arc<dyn crate::clock::Clock>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger { charges: Mutex::default(), refunds: Mutex::default(), clock: Arc::new(crate::clock::SystemClock) }
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("charges", &self.charges).field("refunds", &self.refunds).finish()
    }
}

impl Ledger {
    pub fn find(&self, idempotency_key: &str) -> Option<Charge> {
        let guard = self.charges.lock().unwrap();
        guard.1.get(idempotency_key).map(|&i| guard.0[i].clone())
    }

    /// Records a charge, or returns the one already made under the same key.
    pub fn record(&self, request: &ChargeRequest) -> Charge {
        self.charge_under_key(request, true)
    }

    /// A new charge even when the key was seen (a gateway that does not deduplicate); a lookup by
    /// the key still finds the first.
    fn record_again(&self, request: &ChargeRequest) -> Charge {
        self.charge_under_key(request, false)
    }

    fn charge_under_key(&self, request: &ChargeRequest, deduplicate: bool) -> Charge {
        let mut guard = self.charges.lock().unwrap();
        if let Some(&i) = guard.1.get(&request.idempotency_key).filter(|_| deduplicate) {
            return guard.0[i].clone();
        }
        let charge = Charge {
            id: format!("ch_{}", uuid::Uuid::new_v4().simple()),
            idempotency_key: request.idempotency_key.clone(),
            amount: request.money.amount().clone(),
            currency: request.money.currency().to_string(),
            created_at: self.clock.now(),
        };
        let index = guard.0.len();
        guard.0.push(charge.clone());
        guard.1.entry(charge.idempotency_key.clone()).or_insert(index);
        charge
    }

    /// Takes in a charge made before this ledger existed (the demo data's history, so that its
    /// refunds find their charges), unless a charge under its key or with its id is known. Returns
    /// whether it was taken in.
    pub fn import(&self, charge: Charge) -> bool {
        let mut guard = self.charges.lock().unwrap();
        if guard.1.contains_key(&charge.idempotency_key) || guard.0.iter().any(|c| c.id == charge.id) {
            return false;
        }
        let index = guard.0.len();
        guard.1.insert(charge.idempotency_key.clone(), index);
        guard.0.push(charge);
        true
    }

    pub fn all(&self) -> Vec<Charge> {
        self.charges.lock().unwrap().0.clone()
    }

    pub fn find_refund(&self, idempotency_key: &str) -> Option<GatewayRefund> {
        self.refunds.lock().unwrap().iter().find(|r| r.idempotency_key == idempotency_key).cloned()
    }

    /// Gives back part of a charge, at most what remains of it; a repeated key returns the refund
    /// it made the first time.
    pub fn refund(&self, request: &RefundRequest) -> Result<GatewayRefund, GatewayError> {
        let charge = self.all().into_iter().find(|c| c.id == request.charge_id);
        let mut refunds = self.refunds.lock().unwrap();
        if let Some(done) = refunds.iter().find(|r| r.idempotency_key == request.idempotency_key) {
            return Ok(done.clone());
        }
        let Some(charge) = charge else { return Err(GatewayError::declined(DeclineCode::ChargeNotFound)) };
        let refunded: BigDecimal = refunds.iter().filter(|r| r.charge == charge.id).map(|r| r.amount.clone()).sum();
        if refunded + request.money.amount() > charge.amount {
            return Err(GatewayError::declined(DeclineCode::RefundExceedsCharge));
        }
        let refund = GatewayRefund {
            id: format!("re_{}", uuid::Uuid::new_v4().simple()),
            idempotency_key: request.idempotency_key.clone(),
            charge: charge.id,
            amount: request.money.amount().clone(),
            currency: request.money.currency().to_string(),
            created_at: self.clock.now(),
        };
        refunds.push(refund.clone());
        Ok(refund)
    }

    pub fn refunds(&self) -> Vec<GatewayRefund> {
        self.refunds.lock().unwrap().clone()
    }
}

/// Random outcomes at configured rates: the gateway of seed 000 (70% success, 20% timeout, 10%
/// invalid card by default). A repeated key returns the original charge, as real gateways do.
pub struct Simulation {
    ledger: Ledger,
    rng: Mutex<StdRng>,
    success_rate: f64,
    timeout_rate: f64,
    /// Real gateways return the first charge for a repeated idempotency key; `false` charges
    /// again, so a test can see any charge the app sent twice.
    deduplicate: bool,
}

impl Simulation {
    /// A gateway that charges every request it gets, its key seen before or not.
    pub fn without_deduplication(self) -> Simulation {
        Simulation { deduplicate: false, ..self }
    }

    pub fn new(success_rate: f64, timeout_rate: f64, seed: Option<u64>) -> Simulation {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Simulation { ledger: Ledger::default(), rng: Mutex::new(rng), success_rate, timeout_rate, deduplicate: true }
    }

    pub fn always_succeeding() -> Simulation {
        Simulation::new(1.0, 0.0, None)
    }

    pub fn charge(&self, request: &ChargeRequest) -> Result<Charge, GatewayError> {
        if !self.deduplicate {
            return Ok(self.ledger.record_again(request));
        }
        if let Some(existing) = self.ledger.find(&request.idempotency_key) {
            return Ok(existing);
        }
        match TestCard::parse(request.payment_method.as_deref()) {
            Some(TestCard::Visa) => return Ok(self.ledger.record(request)),
            Some(TestCard::ChargeDeclined) => return Err(GatewayError::declined(DeclineCode::CardDeclined)),
            None => {}
        }
        let roll: f64 = self.rng.lock().unwrap().gen();
        if roll < self.success_rate {
            Ok(self.ledger.record(request))
        } else if roll < self.success_rate + self.timeout_rate {
            Err(GatewayError::Timeout)
        } else {
            Err(GatewayError::declined(DeclineCode::InvalidCard))
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

/// How long a simulated gateway takes to answer: `latency`, give or take up to `jitter`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub latency: Duration,
    pub jitter: Duration,
}

impl Latency {
    pub fn fixed(latency: Duration) -> Latency {
        Latency { latency, jitter: Duration::ZERO }
    }

    pub fn sample(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.latency;
        }
        let spread = rand::thread_rng().gen_range(-1.0..=1.0) * self.jitter.as_secs_f64();
        Duration::from_secs_f64((self.latency.as_secs_f64() + spread).max(0.0))
    }

    /// Waits one sampled latency, on the timer of the runtime the call runs on.
    pub async fn wait(&self) {
        let pause = self.sample();
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

/// The simulation in-process, with an optional latency per call.
pub struct SimulatedGateway {
    simulation: Simulation,
    latency: Latency,
}

impl SimulatedGateway {
    pub fn new(simulation: Simulation, latency: Latency) -> SimulatedGateway {
        SimulatedGateway { simulation, latency }
    }

    pub fn ledger(&self) -> &Ledger {
        self.simulation.ledger()
    }
}

impl PaymentGateway for SimulatedGateway {
    fn charge(self: Arc<Self>, request: ChargeRequest) -> GatewayFuture<Charge> {
        Box::pin(async move {
            self.latency.wait().await;
            self.simulation.charge(&request)
        })
    }

    fn lookup(self: Arc<Self>, idempotency_key: String) -> GatewayFuture<Option<Charge>> {
        Box::pin(async move {
            self.latency.wait().await;
            Ok(self.simulation.ledger().find(&idempotency_key))
        })
    }

    fn refund(self: Arc<Self>, request: RefundRequest) -> GatewayFuture<GatewayRefund> {
        Box::pin(async move {
            self.latency.wait().await;
            self.simulation.ledger().refund(&request)
        })
    }

    fn lookup_refund(self: Arc<Self>, idempotency_key: String) -> GatewayFuture<Option<GatewayRefund>> {
        Box::pin(async move {
            self.latency.wait().await;
            Ok(self.simulation.ledger().find_refund(&idempotency_key))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payments::money::{Currency, Money};

    fn request(key: &str) -> ChargeRequest {
        ChargeRequest { idempotency_key: key.to_string(), money: Money::from_minor(1_000, Currency::USD), payment_method: None }
    }

    #[test]
    fn a_repeated_key_returns_the_original_charge() {
        let sim = Simulation::always_succeeding();
        let req = request("k1");
        let first = sim.charge(&req).unwrap();
        let second = sim.charge(&req).unwrap();
        assert_eq!(first, second);
        assert_eq!(sim.ledger().all().len(), 1);
    }

    #[test]
    fn simulated_outcomes_follow_the_configured_rates() {
        let sim = Simulation::new(0.7, 0.2, Some(42));
        let (mut ok, mut timeouts, mut declines) = (0, 0, 0);
        for i in 0..10_000 {
            match sim.charge(&request(&format!("k{i}"))) {
                Ok(_) => ok += 1,
                Err(GatewayError::Timeout) => timeouts += 1,
                Err(GatewayError::Declined { .. }) => declines += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!((6_700..7_300).contains(&ok), "{ok}");
        assert!((1_700..2_300).contains(&timeouts), "{timeouts}");
        assert!((700..1_300).contains(&declines), "{declines}");
    }

    #[test]
    fn test_cards_decide_the_outcome_and_refunds_never_exceed_the_charge() {
        let sim = Simulation::new(0.0, 0.0, Some(1)); // every unmarked charge would be declined
        let visa = ChargeRequest { payment_method: Some("pm_card_visa".into()), ..request("v") };
        let charge = sim.charge(&visa).unwrap();
        let declined = ChargeRequest { payment_method: Some("pm_card_chargeDeclined".into()), ..request("d") };
        assert_eq!(sim.charge(&declined).unwrap_err().code(), "card_declined");
        let refund = |key: &str, amount: i64| RefundRequest {
            idempotency_key: key.into(),
            charge_id: charge.id.clone(),
            money: Money::from_minor(amount * 100, Currency::USD),
        };
        let first = sim.ledger().refund(&refund("r1", 6)).unwrap();
        assert_eq!(sim.ledger().refund(&refund("r1", 6)).unwrap(), first, "a repeated key is the same refund");
        assert_eq!(sim.ledger().refund(&refund("r2", 5)).unwrap_err().code(), "refund_exceeds_charge");
        sim.ledger().refund(&refund("r3", 4)).unwrap();
        assert_eq!(sim.ledger().refunds().len(), 2);
    }

    #[test]
    fn transient_and_permanent_failures_are_told_apart() {
        assert!(GatewayError::Timeout.is_transient());
        assert!(GatewayError::Timeout.may_have_charged() && GatewayError::Ambiguous("502".into()).may_have_charged());
        assert!(!GatewayError::Unavailable("503".into()).may_have_charged());
        assert!(!GatewayError::declined(DeclineCode::InvalidCard).may_have_charged());
        assert!(GatewayError::Unavailable("503".into()).is_transient());
        assert!(!GatewayError::declined(DeclineCode::InvalidCard).is_transient());
        assert!(!GatewayError::declined(DeclineCode::InsufficientFunds).is_transient());
    }
}
