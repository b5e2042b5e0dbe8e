//! The payment gateway as a strategy: the processor only knows this trait. Implementations here
//! are the simulated gateway (random outcomes, for demos) and the scripted one (exact outcomes, for
//! tests); `http_gateway` talks to a Stripe-like API over HTTP.
//!
//! Calls are asynchronous: a charge waiting on a gateway that answers in 300 ms is a small future
//! on the `GatewayRuntime`, not a thread, so hundreds can be in flight at once.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::GatewayConfig;

#[derive(Debug, Clone)]
pub struct ChargeRequest {
    pub idempotency_key: String,
    pub amount: BigDecimal,
    pub currency: String,
    /// A test card the simulations understand (see `TestCard`); real gateways take a token here.
    pub payment_method: Option<String>,
}

/// Give back part or all of a charge.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub idempotency_key: String,
    pub charge_id: String,
    pub amount: BigDecimal,
    pub currency: String,
}

/// Money the gateway has given back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayRefund {
    pub id: String,
    pub idempotency_key: String,
    pub charge: String,
    pub amount: BigDecimal,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

/// Stripe's test payment methods, understood by the simulation and `gateway-sim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestCard {
    /// Always approved; its refunds succeed.
    Visa,
    /// Always declined with `card_declined`.
    ChargeDeclined,
}

impl TestCard {
    pub const METHODS: [&'static str; 2] = ["pm_card_visa", "pm_card_chargeDeclined"];

    pub fn parse(method: Option<&str>) -> Option<TestCard> {
        match method? {
            "pm_card_visa" => Some(TestCard::Visa),
            "pm_card_chargeDeclined" => Some(TestCard::ChargeDeclined),
            _ => None,
        }
    }
}

/// Money the gateway has taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub idempotency_key: String,
    pub amount: BigDecimal,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclineCode {
    InvalidCard,
    InsufficientFunds,
    CardDeclined,
    /// A refund for a charge the gateway does not know.
    ChargeNotFound,
    /// A refund larger than what remains of its charge.
    RefundExceedsCharge,
}

impl DeclineCode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineCode::InvalidCard => "invalid_card",
            DeclineCode::InsufficientFunds => "insufficient_funds",
            DeclineCode::CardDeclined => "card_declined",
            DeclineCode::ChargeNotFound => "charge_not_found",
            DeclineCode::RefundExceedsCharge => "refund_exceeds_charge",
        }
    }

    pub fn parse(code: &str) -> DeclineCode {
        match code {
            "invalid_card" => DeclineCode::InvalidCard,
            "insufficient_funds" => DeclineCode::InsufficientFunds,
            "charge_not_found" => DeclineCode::ChargeNotFound,
            "refund_exceeds_charge" => DeclineCode::RefundExceedsCharge,
            _ => DeclineCode::CardDeclined,
        }
    }

    pub fn default_message(self) -> &'static str {
        match self {
            DeclineCode::InvalidCard => "Invalid card number",
            DeclineCode::InsufficientFunds => "Insufficient funds",
            DeclineCode::CardDeclined => "The card was declined",
            DeclineCode::ChargeNotFound => "No such charge",
            DeclineCode::RefundExceedsCharge => "The refund is larger than what remains of the charge",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayError {
    /// No answer in time: the charge may or may not have happened.
    #[error("Gateway timeout")]
    Timeout,
    /// The request was sent and the gateway failed while handling it (500, 502, a reset
    /// connection): the charge may or may not have happened.
    #[error("Gateway error: {0}")]
    Ambiguous(String),
    /// The gateway did not take the request (503, 429, connection refused): nothing was charged.
    #[error("Gateway unavailable: {0}")]
    Unavailable(String),
    /// The gateway refused the charge for good; asking again gives the same answer.
    #[error("{message}")]
    Declined { code: DeclineCode, message: String },
}

impl GatewayError {
    pub fn declined(code: DeclineCode) -> GatewayError {
        GatewayError::Declined { code, message: code.default_message().to_string() }
    }

    pub fn is_transient(&self) -> bool {
        !matches!(self, GatewayError::Declined { .. })
    }

    /// Whether money may have been taken although no charge came back: only a lookup can tell.
    pub fn may_have_charged(&self) -> bool {
        matches!(self, GatewayError::Timeout | GatewayError::Ambiguous(_))
    }

    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Timeout => "gateway_timeout",
            GatewayError::Ambiguous(_) => "gateway_error",
            GatewayError::Unavailable(_) => "gateway_unavailable",
            GatewayError::Declined { code, .. } => code.as_str(),
        }
    }
}

/// What a gateway call gives back, some time later.
pub type GatewayFuture<T> = Pin<Box<dyn Future<Output = Result<T, GatewayError>> + Send + 'static>>;

pub trait PaymentGateway: Send + Sync + 'static {
    /// Takes the money. Calling it again with the same key must not take it twice.
    fn charge(self: Arc<Self>, request: ChargeRequest) -> GatewayFuture<Charge>;
    /// Finds the charge made under this key, if any: how a lost answer is recovered.
    fn lookup(self: Arc<Self>, idempotency_key: String) -> GatewayFuture<Option<Charge>>;
    /// Gives money back. Calling it again with the same key must not give it back twice.
    fn refund(self: Arc<Self>, request: RefundRequest) -> GatewayFuture<GatewayRefund>;
    /// Finds the refund made under this key, if any.
    fn lookup_refund(self: Arc<Self>, idempotency_key: String) -> GatewayFuture<Option<GatewayRefund>>;
}

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
        let mut guard = self.charges.lock().unwrap();
        if let Some(&i) = guard.1.get(&request.idempotency_key) {
            return guard.0[i].clone();
        }
        let charge = Charge {
            id: format!("ch_{}", uuid::Uuid::new_v4().simple()),
            idempotency_key: request.idempotency_key.clone(),
            amount: request.amount.clone(),
            currency: request.currency.clone(),
            created_at: self.clock.now(),
        };
        let index = guard.0.len();
        guard.0.push(charge.clone());
        guard.1.insert(charge.idempotency_key.clone(), index);
        charge
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
        if refunded + &request.amount > charge.amount {
            return Err(GatewayError::declined(DeclineCode::RefundExceedsCharge));
        }
        let refund = GatewayRefund {
            id: format!("re_{}", uuid::Uuid::new_v4().simple()),
            idempotency_key: request.idempotency_key.clone(),
            charge: charge.id,
            amount: request.amount.clone(),
            currency: request.currency.clone(),
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
}

impl Simulation {
    pub fn new(success_rate: f64, timeout_rate: f64, seed: Option<u64>) -> Simulation {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Simulation { ledger: Ledger::default(), rng: Mutex::new(rng), success_rate, timeout_rate }
    }

    pub fn always_succeeding() -> Simulation {
        Simulation::new(1.0, 0.0, None)
    }

    pub fn charge(&self, request: &ChargeRequest) -> Result<Charge, GatewayError> {
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

/// The gateway the configuration asks for.
pub fn from_config(config: &GatewayConfig) -> Arc<dyn PaymentGateway> {
    match config {
        GatewayConfig::Simulated { success_rate, timeout_rate, latency, jitter, seed } => Arc::new(SimulatedGateway::new(
            Simulation::new(*success_rate, *timeout_rate, *seed),
            Latency { latency: *latency, jitter: *jitter },
        )),
        GatewayConfig::Http { base_url, timeout } => {
            Arc::new(super::http_gateway::HttpGateway::new(base_url, *timeout))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &str) -> ChargeRequest {
        ChargeRequest { idempotency_key: key.to_string(), amount: BigDecimal::from(10), currency: "USD".into(), payment_method: None }
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
        let refund = |key: &str, amount: i32| RefundRequest {
            idempotency_key: key.into(),
            charge_id: charge.id.clone(),
            amount: BigDecimal::from(amount),
            currency: "USD".into(),
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
