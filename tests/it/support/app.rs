//! The app, in-process, on a real socket, against its own database (zero2prod's `spawn_app`).

use actix_web::cookie::Key;
use actix_web::dev::ServerHandle;
use std::net::TcpListener;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use agora::app::{Services, Strategies};
use agora::cache::Cache;
use agora::clock::{Clock, SystemClock};
use agora::config::{AuthSettings, JobSettings, PaymentSettings};
use agora::db;
use agora::jobs::Worker;
use agora::payments::fraud::{FraudCheck, NoFraudCheck};
use agora::payments::gateway::{PaymentGateway, Simulation};
use agora::payments::gateway::HttpGateway;
use agora::payments::{sim_server, Charge};
use agora::web::{self, AppState, ServerOptions};

use super::db::{redis_url, TestDb};

/// Runs an actix server on its own thread and system; stops it when dropped.
pub struct Running {
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    pub fn start(make: impl FnOnce(TcpListener) -> std::io::Result<actix_web::dev::Server> + Send + 'static) -> (Running, String) {
        let listener = agora::web::listen("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = make(listener).expect("server starts");
                tx.send(server.handle()).unwrap();
                server.await.unwrap();
            })
        });
        let handle = rx.recv().expect("server handle");
        (Running { handle, thread: Some(thread) }, addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        actix_web::rt::System::new().block_on(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `agora gateway-sim`, in-process: a Stripe-like API over HTTP with a ledger tests can read.
pub struct GatewaySim {
    pub url: String,
    _server: Running,
}

impl GatewaySim {
    pub fn start(simulation: Simulation) -> GatewaySim {
        GatewaySim::start_answering_in(simulation, std::time::Duration::ZERO)
    }

    /// One that takes `latency` to answer each call, as real gateways do.
    pub fn start_answering_in(simulation: Simulation, latency: std::time::Duration) -> GatewaySim {
        let simulation = Arc::new(simulation);
        let (server, url) = Running::start(move |l| sim_server::run(l, simulation, agora::payments::gateway::Latency::fixed(latency)));
        GatewaySim { url, _server: server }
    }

    pub fn client(&self) -> Arc<dyn PaymentGateway> {
        Arc::new(HttpGateway::new(&self.url, Duration::from_secs(5)))
    }

    /// The ledger as `GET /charges` serves it.
    /// The refunds the simulation's ledger holds, as its HTTP API lists them.
    pub fn refunds(&self) -> Vec<serde_json::Value> {
        let list: serde_json::Value = ureq::get(&format!("{}/v1/refunds", self.url)).call().unwrap().into_json().unwrap();
        list["data"].as_array().cloned().unwrap_or_default()
    }

    pub fn charges(&self) -> Vec<Charge> {
        #[derive(serde::Deserialize)]
        struct Ledger {
            count: usize,
            charges: Vec<Charge>,
        }
        let ledger: Ledger = ureq::get(&format!("{}/charges", self.url)).call().unwrap().into_json().unwrap();
        assert_eq!(ledger.count, ledger.charges.len());
        ledger.charges
    }

    pub fn charges_for(&self, idempotency_key: &str) -> Vec<Charge> {
        self.charges().into_iter().filter(|c| c.idempotency_key == idempotency_key).collect()
    }
}

/// The test apps' `METRICS_TOKEN`.
pub const METRICS_TOKEN: &str = "scraper-secret-token";

pub struct TestApp {
    pub url: String,
    pub services: Arc<Services>,
    /// What SIGTERM sets on a real server: `/readyz` answers 503 while it is on.
    pub draining: web::Draining,
    _server: Running,
    // Dropped last: the database outlives the server and pool that use it.
    pub db: TestDb,
}

pub struct TestAppOptions {
    pub gateway: Arc<dyn PaymentGateway>,
    pub fraud: Arc<dyn FraudCheck>,
    pub clock: Arc<dyn Clock>,
    pub redis: bool,
    /// A Redis of the test's own (to stop it mid-test) instead of the shared one.
    pub redis_url: Option<String>,
    /// How long Redis is left alone after a failure.
    pub redis_rest: Duration,
    /// Each Redis command's deadline (the app's 50 ms unless a test needs every count to reach
    /// Redis on a loaded machine).
    pub redis_deadline: Duration,
    pub jobs: JobSettings,
    pub payments: PaymentSettings,
    pub auth: AuthSettings,
    /// Served as if over HTTPS (`SECURE_COOKIES`).
    pub secure_cookies: bool,
    pub chat_rate: agora::chat::limits::RateSettings,
    /// Chats and messages accepted through Redis (`CHAT_INTAKE=redis`).
    pub chat_intake: bool,
    /// Another database the reads that may lag go to, standing in for a replica
    /// (`DATABASE_READ_URL`).
    pub read_url: Option<String>,
}

impl TestAppOptions {
    pub fn new(gateway: Arc<dyn PaymentGateway>) -> TestAppOptions {
        TestAppOptions {
            gateway,
            fraud: Arc::new(NoFraudCheck),
            clock: Arc::new(SystemClock),
            redis: true,
            redis_url: None,
            redis_rest: agora::cache::REST,
            redis_deadline: agora::cache::DEADLINE,
            jobs: JobSettings::default(),
            payments: PaymentSettings::default(),
            auth: AuthSettings::default(),
            secure_cookies: false,
            chat_rate: agora::chat::limits::RateSettings::default(),
            chat_intake: false,
            read_url: None,
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The chat intake's threads stop before the database they write to goes.
        self.services.chat_stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl TestApp {
    pub fn spawn(gateway: Arc<dyn PaymentGateway>) -> TestApp {
        TestApp::spawn_with(TestAppOptions::new(gateway))
    }

    pub fn spawn_with(options: TestAppOptions) -> TestApp {
        let db = TestDb::new();
        let pool = db::build_pool(&db.url, 24).expect("pool");
        let strategies = Strategies { gateway: options.gateway, fraud: options.fraud, clock: options.clock };
        // Each test has its own key prefix, so tests share one Redis without seeing each other.
        let redis = options.redis.then(|| options.redis_url.clone().unwrap_or_else(redis_url));
        let cache = Cache::with_timing(redis.as_deref(), &format!("{}:", db.name), options.redis_deadline, options.redis_rest);
        let mut services = Services::new(pool, cache, strategies, options.payments, options.jobs, options.auth);
        services.chat_rate = options.chat_rate;
        services.read_pool = options.read_url.as_deref().map(|url| db::build_pool(url, 4).expect("read pool"));
        if options.chat_intake {
            services.accept_chats_through_redis();
        }
        let services = Arc::new(services);
        let state_services = services.clone();
        let secure_cookies = options.secure_cookies;
        let draining = web::Draining::default();
        let server_draining = draining.clone();
        let (server, url) = Running::start(move |listener| {
            // One trusted proxy, so a test can speak from another address with `X-Forwarded-For`.
            let state = AppState { query_count_header: true, trusted_proxy_hops: 1, metrics_token: Some(METRICS_TOKEN.into()), draining: server_draining };
            let options = ServerOptions { session_key: Key::generate(), secure_cookies, workers: Some(2), mount: state_services.mount(), extra_routes: None };
            web::server(listener, state, options)
        });
        TestApp { url, services, draining, _server: server, db }
    }

    /// A second server on the same database and Redis prefix, with its own pool and services: what
    /// another server process of the same installation would be. It stops when dropped.
    pub fn sibling(&self, chat_rate: agora::chat::limits::RateSettings) -> (Running, String) {
        let (running, url, _) = self.sibling_with(chat_rate, None);
        (running, url)
    }

    /// A sibling on this Redis (`Some(url)`: a test's own) accepting chats through it.
    pub fn sibling_with(&self, chat_rate: agora::chat::limits::RateSettings, intake_redis: Option<&str>) -> (Running, String, Option<Arc<Services>>) {
        let pool = db::build_pool(&self.db.url, 24).expect("pool");
        let strategies = Strategies {
            gateway: Arc::new(agora::payments::gateway::ScriptedGateway::succeeding()),
            fraud: Arc::new(NoFraudCheck),
            clock: Arc::new(SystemClock),
        };
        let redis = intake_redis.map(str::to_string).unwrap_or_else(redis_url);
        let cache = Cache::with_timing(Some(&redis), &format!("{}:", self.db.name), agora::cache::DEADLINE, agora::cache::REST);
        let mut services = Services::new(pool, cache, strategies, PaymentSettings::default(), JobSettings::default(), AuthSettings::default());
        services.chat_rate = chat_rate;
        if intake_redis.is_some() {
            services.accept_chats_through_redis();
        }
        let services = Arc::new(services);
        let kept = intake_redis.is_some().then(|| services.clone());
        let (running, url) = Running::start(move |listener| {
            let state = AppState { query_count_header: true, trusted_proxy_hops: 1, metrics_token: Some(METRICS_TOKEN.into()), draining: web::Draining::default() };
            let options = ServerOptions { session_key: Key::generate(), secure_cookies: false, workers: Some(2), mount: services.mount(), extra_routes: None };
            web::server(listener, state, options)
        });
        (running, url, kept)
    }

    pub fn conn(&self) -> diesel::PgConnection {
        self.db.connect()
    }

    pub fn worker(&self, id: &str) -> Worker {
        Worker::new(id.into(), self.services.registry.clone(), self.services.clock.clone(), self.services.worker_settings())
    }

    /// Runs every job that is due now, in this thread, until none is left: the deterministic way
    /// for a test to let "the workers" do their part.
    pub fn drain_jobs(&self) -> usize {
        let worker = self.worker("test-worker");
        let mut conn = self.conn();
        let mut total = 0;
        loop {
            let ran = worker.run_once(&mut conn).expect("worker cycle");
            if ran == 0 {
                return total;
            }
            total += ran;
        }
    }
}
