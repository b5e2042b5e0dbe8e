//! What production needs to see, in the Prometheus text format at `GET /metrics`: HTTP requests
//! by route and status, charges in flight, the gateway's answers and latency, settle latency, jobs
//! per queue and state, and the breaker. Counters live in this process; the job and breaker gauges
//! are read from PostgreSQL when scraped.

use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::LazyLock;
use std::time::Duration;

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    pub charges_in_flight: IntGauge,
    pub charges_in_flight_max: IntGauge,
    pub gateway_answers: IntCounterVec,
    pub gateway_seconds: Histogram,
    pub settle_seconds: Histogram,
    pub jobs: IntGaugeVec,
    pub breaker_open: IntGauge,
    /// Redis calls that failed: `late` (no answer within the deadline), `unavailable` (refused,
    /// broken) or `skipped` (not tried: resting after a failure).
    pub redis_errors: IntCounterVec,
    /// Where a request's session came from: `cache` (Redis), `database` (not cached yet) or
    /// `database_redis_failed` (Redis did not answer).
    pub session_reads: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn build() -> Metrics {
    let registry = Registry::new();
    let http_requests = IntCounterVec::new(Opts::new("agora_http_requests_total", "HTTP requests by route and status"), &["route", "status"]).unwrap();
    let http_seconds = HistogramVec::new(
        HistogramOpts::new("agora_http_request_seconds", "HTTP request latency by route").buckets(LATENCY_BUCKETS.to_vec()),
        &["route"],
    )
    .unwrap();
    let charges_in_flight = IntGauge::new("agora_charges_in_flight", "charges waiting on the gateway now").unwrap();
    let charges_in_flight_max = IntGauge::new("agora_charges_in_flight_max", "the most charges ever waiting on the gateway at once").unwrap();
    let gateway_answers =
        IntCounterVec::new(Opts::new("agora_gateway_answers_total", "gateway attempts by what they established"), &["outcome"]).unwrap();
    let gateway_seconds = Histogram::with_opts(
        HistogramOpts::new("agora_gateway_seconds", "gateway attempt latency (lookup and charge)").buckets(LATENCY_BUCKETS.to_vec()),
    )
    .unwrap();
    let settle_seconds = Histogram::with_opts(
        HistogramOpts::new("agora_settle_seconds", "time to settle one batch of gateway answers").buckets(LATENCY_BUCKETS.to_vec()),
    )
    .unwrap();
    let jobs = IntGaugeVec::new(Opts::new("agora_jobs", "jobs by queue and state"), &["queue", "state"]).unwrap();
    let redis_errors = IntCounterVec::new(Opts::new("agora_redis_errors_total", "Redis calls that failed, by kind"), &["kind"]).unwrap();
    let session_reads = IntCounterVec::new(Opts::new("agora_session_reads_total", "sessions read, by where from"), &["from"]).unwrap();
    let breaker_open = IntGauge::new("agora_gateway_breaker_open", "1 while the gateway's circuit breaker is open or half open").unwrap();
    for metric in [
        Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(http_seconds.clone()),
        Box::new(charges_in_flight.clone()),
        Box::new(charges_in_flight_max.clone()),
        Box::new(gateway_answers.clone()),
        Box::new(gateway_seconds.clone()),
        Box::new(settle_seconds.clone()),
        Box::new(jobs.clone()),
        Box::new(breaker_open.clone()),
        Box::new(redis_errors.clone()),
        Box::new(session_reads.clone()),
    ] {
        registry.register(metric).unwrap();
    }
    Metrics {
        registry,
        http_requests,
        http_seconds,
        charges_in_flight,
        charges_in_flight_max,
        gateway_answers,
        gateway_seconds,
        settle_seconds,
        jobs,
        breaker_open,
        redis_errors,
        session_reads,
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(build);

pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    pub fn http(&self, route: &str, status: u16, took: Duration) {
        self.http_requests.with_label_values(&[route, &status.to_string()]).inc();
        self.http_seconds.with_label_values(&[route]).observe(took.as_secs_f64());
    }

    /// `n` more charges are waiting on the gateway (negative: fewer).
    pub fn in_flight(&self, n: i64) {
        self.charges_in_flight.add(n);
        let now = self.charges_in_flight.get();
        if now > self.charges_in_flight_max.get() {
            self.charges_in_flight_max.set(now);
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Gauges that are read from PostgreSQL when `/metrics` is scraped, so that every process reports
/// the same value. An area registers its own (the payments' breaker) at start-up; the handler that
/// renders the metrics knows none of them by name.
pub trait DatabaseGauges: Send + Sync {
    fn refresh(&self, conn: &mut diesel::PgConnection) -> diesel::QueryResult<()>;
}
