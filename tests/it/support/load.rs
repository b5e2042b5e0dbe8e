//! Seed 004's "100 payments per second", done properly: payments are sent through the API at a
//! set rate for a set time — on schedule, whether or not earlier ones have answered (an open
//! loop, so a slow server cannot quietly lower the rate) — then every accepted payment is followed
//! until it settles. Shared by `examples/load_payments.rs` (`scripts/load-payments`) and a test.

use serde_json::{json, Value};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Plan {
    /// The server, e.g. `http://127.0.0.1:8080`.
    pub base: String,
    pub token: String,
    /// The customer to pay, as the API knows it (`cus_…`).
    pub customer: String,
    pub per_second: u32,
    pub seconds: u32,
    pub payment_method: Option<String>,
    /// How long accepted payments may take to settle.
    pub settle_within: Duration,
    /// Requests in flight at most (the open loop's senders).
    pub senders: usize,
}

/// Blocks until something may have settled (a test: the worker pool's progress signal; the
/// script, against a server it cannot hear from: a pause between rounds of asking).
pub type WaitForProgress<'a> = &'a (dyn Fn() + Sync);

#[derive(Debug, Default)]
pub struct Report {
    pub sent: usize,
    pub accepted: usize,
    pub refused: usize,
    pub completed: usize,
    pub failed: usize,
    /// Accepted, but not final when the time to settle ran out (or no longer found): the number
    /// that must be zero.
    pub lost: usize,
    pub latencies_ms: Vec<f64>,
    pub settled_in: Duration,
    pub send_seconds: f64,
}

impl Report {
    pub fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or(0.0)
    }

    pub fn summary(&self) -> String {
        format!(
            "sent {} in {:.1} s: accepted {}, refused {}; completed {}, failed {}, lost {} (settled within {:.1} s); \
             latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.sent,
            self.send_seconds,
            self.accepted,
            self.refused,
            self.completed,
            self.failed,
            self.lost,
            self.settled_in.as_secs_f64(),
            self.percentile(0.5),
            self.percentile(0.9),
            self.percentile(0.99),
            self.percentile(1.0),
        )
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build()
}

/// Latency is measured from when a request was due, not when it went out: time spent waiting for
/// a free sender counts (no coordinated omission).
pub fn run(plan: &Plan, wait_for_progress: WaitForProgress<'_>) -> Report {
    let total = (plan.per_second * plan.seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(plan.per_second.max(1)));
    let (due_tx, due_rx) = mpsc::sync_channel::<(usize, Instant)>(total);
    let due_rx = std::sync::Arc::new(std::sync::Mutex::new(due_rx));
    let (done_tx, done_rx) = mpsc::channel::<(u16, Option<String>, f64)>();
    let started = Instant::now();
    let senders: Vec<_> = (0..plan.senders.max(1))
        .map(|_| {
            let (due_rx, done_tx) = (due_rx.clone(), done_tx.clone());
            let (url, token, customer, method) = (format!("{}/api/v1/payments", plan.base), plan.token.clone(), plan.customer.clone(), plan.payment_method.clone());
            std::thread::spawn(move || {
                let agent = agent();
                loop {
                    let next = due_rx.lock().unwrap().recv();
                    let Ok((i, due)) = next else { return };
                    let body = json!({ "customer": customer, "amount": 1_000 + (i % 9_000) as i64, "currency": "usd", "payment_method": method, "description": format!("load {i}") });
                    let answer = agent
                        .post(&url)
                        .set("Authorization", &format!("Bearer {token}"))
                        .set("Idempotency-Key", &format!("load-{}-{i}", std::process::id()))
                        .send_json(body);
                    let latency = due.elapsed().as_secs_f64() * 1000.0;
                    let (status, id) = match answer {
                        Ok(r) => (r.status(), r.into_json::<Value>().ok().and_then(|v| v["id"].as_str().map(str::to_string))),
                        Err(ureq::Error::Status(s, _)) => (s, None),
                        Err(_) => (0, None),
                    };
                    let _ = done_tx.send((status, id, latency));
                }
            })
        })
        .collect();
    drop(done_tx);
    // The schedule is a timer: request i is due at start + i × interval, whatever the answers.
    let timer = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a timer");
    timer.block_on(async {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::from_std(started), interval);
        for i in 0..total {
            let due = ticks.tick().await.into_std();
            due_tx.send((i, due)).unwrap();
        }
    });
    drop(due_tx);
    for s in senders {
        s.join().unwrap();
    }
    let send_seconds = started.elapsed().as_secs_f64();
    let mut report = Report { send_seconds, ..Report::default() };
    let mut accepted = Vec::new();
    for (status, id, latency) in done_rx {
        report.sent += 1;
        report.latencies_ms.push(latency);
        match (status, id) {
            (201, Some(id)) => accepted.push(id),
            _ => report.refused += 1,
        }
    }
    report.accepted = accepted.len();
    let settle_started = Instant::now();
    let agent = agent();
    let mut open = accepted;
    while !open.is_empty() && settle_started.elapsed() < plan.settle_within {
        let mut still = Vec::new();
        for id in open {
            let answer = agent.get(&format!("{}/api/v1/payments/{id}", plan.base)).set("Authorization", &format!("Bearer {}", plan.token)).call();
            let payment: Option<Value> = answer.ok().and_then(|r| r.into_json().ok());
            match payment.as_ref().and_then(|p| p["status"].as_str()) {
                Some("completed") => report.completed += 1,
                Some("failed") if payment.as_ref().is_some_and(|p| p["final"] == true) => report.failed += 1,
                _ => still.push(id),
            }
        }
        open = still;
        if !open.is_empty() {
            wait_for_progress();
        }
    }
    report.lost = open.len();
    report.settled_in = settle_started.elapsed();
    report
}
