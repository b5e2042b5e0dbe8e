//! Wiring: builds the services every entry point shares (web server, workers, tests, benchmarks)
//! from the configuration and the strategies chosen at start-up.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::auth::password::HashPool;
use crate::auth::AuthState;
use crate::jobs::JobsState;
use crate::orders::OrdersState;
use crate::threads::ThreadsState;
use crate::auth::sessions::SessionStore;
use crate::auth::throttle::LoginThrottle;
use crate::config::{AuthSettings, JobSettings, PaymentSettings};
use crate::jobs::{self, Backoff, Periodic, Registry, Scheduler, Wake, WorkerPool, WorkerSettings};
use crate::orders::pipeline::{self, ChargeOrder, ConfirmPayment, ExpireOrders, QueueLimits, ReconcilePayments};
use crate::payments::breaker::{BreakerSettings, CircuitBreaker};
use crate::payments::fraud::FraudCheck;
use crate::payments::gateway::PaymentGateway;
use crate::payments::PaymentProcessor;
use crate::cache::Cache;
use crate::merchants::jobs::{CheckInvariants, PruneApiKeys, RefundPayment, CHECK_INVARIANTS, PRUNE_API_KEYS};
use crate::merchants::{tokens::TokenKey, MerchantsState};
use crate::db::PgPool;
use crate::threads::cache::ThreadCache;
use crate::threads::counters::{ReconcileCounters, RECONCILE_COUNTERS};

pub const GATEWAY_BREAKER: &str = "payment_gateway";
/// Attempts a refund job gets (with backoff) before it is left, pending and visible, for people.
pub const REFUND_ATTEMPTS: i32 = 8;

/// The strategies injected at start-up: production passes the configured ones, tests their own.
pub struct Strategies {
    pub gateway: Arc<dyn PaymentGateway>,
    pub fraud: Arc<dyn FraudCheck>,
    pub clock: Arc<dyn Clock>,
}

/// How long a session read waits for Redis before asking PostgreSQL.
const SESSION_DEADLINE: Duration = Duration::from_millis(250);

pub struct Services {
    pub pool: PgPool,
    /// A streaming replica's pool for the reads that may lag (`DATABASE_READ_URL`); `None`: every
    /// read goes to the primary.
    pub read_pool: Option<PgPool>,
    pub cache: Cache,
    pub threads: Arc<ThreadCache>,
    pub clock: Arc<dyn Clock>,
    pub processor: Arc<PaymentProcessor>,
    pub registry: Arc<Registry>,
    pub scheduler: Arc<Scheduler>,
    pub breaker: CircuitBreaker,
    pub wake: Arc<Wake>,
    pub jobs: JobSettings,
    pub limits: QueueLimits,
    pub sessions: Arc<SessionStore>,
    pub logins: Arc<LoginThrottle>,
    pub hashing: Arc<HashPool>,
    /// Signs the API's bearer tokens.
    pub api_token_secret: Vec<u8>,
    pub refund_attempts: i32,
    pub intake: Arc<crate::merchants::intake::PaymentIntake>,
    /// The browser's Pay, written in shared commits.
    pub pay_intake: Arc<crate::orders::pay_intake::PayIntake>,
    /// The chat API's rate limit per application token (`CHAT_RATE_PER_SEC`, `CHAT_RATE_BURST`).
    pub chat_rate: crate::chat::limits::RateSettings,
    /// Chats and messages accepted through Redis (`CHAT_INTAKE=redis`), when started.
    pub chat_intake: Option<Arc<crate::chat::intake::ChatIntake>>,
    /// Stops the chat intake's threads.
    pub chat_stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Services {
    pub fn new(pool: PgPool, cache: Cache, strategies: Strategies, payments: PaymentSettings, jobs: JobSettings, auth: AuthSettings) -> Services {
        let Strategies { gateway, fraud, clock } = strategies;
        let threads = Arc::new(ThreadCache::new(cache.clone()));
        let processor = Arc::new(pipeline::payment_processor(gateway, clock.clone(), payments.clone()));
        let breaker = CircuitBreaker::new(
            GATEWAY_BREAKER,
            BreakerSettings { threshold: jobs.breaker_threshold, cooldown: jobs.breaker_cooldown, ..BreakerSettings::default() },
        );
        let reconciler = || ReconcilePayments { processor: processor.clone(), clock: clock.clone(), older_than: payments.processing_lease * 2 };
        let registry = Registry::new()
            .register(Arc::new(ChargeOrder {
                processor: processor.clone(),
                fraud,
                breaker: breaker.clone(),
                clock: clock.clone(),
                backoff: Backoff { base: jobs.charge_backoff_base, ..Backoff::default() },
                busy_retry: payments.processing_lease,
            }))
            .register(Arc::new(RefundPayment {
                processor: processor.clone(),
                backoff: Backoff { base: jobs.charge_backoff_base, ..Backoff::default() },
            }))
            .register(Arc::new(CheckInvariants))
            .register(Arc::new(crate::chat::jobs::ReconcileChatCounts))
            .register(Arc::new(PruneApiKeys { clock: clock.clone() }))
            .register(Arc::new(ExpireOrders { clock: clock.clone(), ttl: jobs.order_ttl }))
            .register(Arc::new(reconciler()))
            .register(Arc::new(ConfirmPayment(reconciler())))
            .register(Arc::new(jobs::PruneJobs { clock: clock.clone() }))
            .register(Arc::new(jobs::PruneSessions { clock: clock.clone() }))
            .register(Arc::new(ReconcileCounters { cache: threads.clone() }))
            .register(Arc::new(jobs::Noop));
        let scheduler = Scheduler::new(periodic_jobs(), clock.clone());
        let limits = QueueLimits { max_ready: jobs.max_ready, charge_attempts: payments.max_attempts };
        let api_token_secret = auth.api_token_secret.clone().unwrap_or_else(|| {
            use rand::RngCore;
            log::warn!("no API_TOKEN_SECRET (or SESSION_SECRET): API tokens are valid only in this process, until it stops");
            let mut secret = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut secret);
            secret
        });
        let pool_for_intake = pool.clone();
        let pay_intake = Arc::new(crate::orders::pay_intake::PayIntake::start(pool.clone(), limits, clock.clone()));
        // Every signed-in request reads its session: on a saturated machine a read that misses the
        // page cache's 50 ms went to PostgreSQL (150 of 20,000 during the Pay benchmark), adding a
        // query where the database has the least to spare. Sessions wait up to 250 ms; a Redis
        // that is really away is still rested after half a second of lateness.
        let sessions = Arc::new(SessionStore::new(cache.patient(SESSION_DEADLINE), pool.clone(), clock.clone(), auth.session_ttl, auth.session_cache_ttl));
        Services {
            pool,
            cache: cache.clone(),
            threads,
            clock,
            processor,
            registry: Arc::new(registry),
            scheduler: Arc::new(scheduler),
            breaker,
            wake: Arc::new(Wake::default()),
            jobs,
            limits,
            sessions,
            logins: Arc::new(LoginThrottle::new(cache.clone(), auth.max_login_failures, auth.login_window)),
            hashing: Arc::new(HashPool::new(auth.hash_threads, auth.hash_queue)),
            api_token_secret,
            refund_attempts: REFUND_ATTEMPTS,
            intake: Arc::new(crate::merchants::intake::PaymentIntake::start(
                pool_for_intake,
                Arc::new(crate::jobs::ReadyEstimate::new(pipeline::PAYMENTS_QUEUE, limits.max_ready, Duration::from_millis(100))),
                limits.charge_attempts,
            )),
            pay_intake,
            chat_rate: crate::chat::limits::RateSettings::default(),
            chat_intake: None,
            read_pool: None,
            chat_stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Accepts chats and messages through Redis from now on (`CHAT_INTAKE=redis`): starts this
    /// server's keeper and persister threads. Call before `mount`.
    pub fn accept_chats_through_redis(&mut self) -> Arc<crate::chat::intake::ChatIntake> {
        // A slow answer from Redis ends the epoch (it may or may not have been applied), so the
        // intake waits up to a second where pages wait 50 ms.
        let intake = Arc::new(crate::chat::intake::ChatIntake::new(self.cache.separate(Duration::from_secs(1)), self.pool.clone()));
        intake.start(self.chat_stop.clone());
        self.chat_intake = Some(intake.clone());
        intake
    }

    pub fn worker_settings(&self) -> WorkerSettings {
        WorkerSettings {
            threads: self.jobs.workers,
            queues: vec!["default".into(), pipeline::PAYMENTS_QUEUE.into()],
            // The process's charges in flight, shared out among its workers.
            in_flight: vec![(pipeline::PAYMENTS_QUEUE.into(), (self.jobs.charges_in_flight / self.jobs.workers.max(1)).max(1) as i64)],
            batch: self.jobs.batch,
            lease: self.jobs.lease,
            ..WorkerSettings::default()
        }
    }

    /// Registers every area's state and routes on a server (`web::ServerOptions::mount`): the
    /// route table of the whole app.
    pub fn mount(self: &Arc<Self>) -> Arc<dyn Fn(&mut actix_web::web::ServiceConfig) + Send + Sync> {
        use actix_web::web::Data;
        let auth = Data::new(AuthState {
            clock: self.clock.clone(),
            sessions: self.sessions.clone(),
            logins: self.logins.clone(),
            hashing: self.hashing.clone(),
        });
        let identify: Data<Arc<dyn crate::web::Identify>> = Data::new(self.sessions.clone());
        let bearers: Data<Arc<dyn crate::web::BearerHolder>> = Data::new(Arc::new(crate::merchants::tokens::BearerUsers));
        let orders = Data::new(OrdersState {
            clock: self.clock.clone(),
            limits: self.limits,
            max_unpaid_orders: self.jobs.max_unpaid_orders,
            wake: self.wake.clone(),
            hold: self.jobs.order_ttl,
            pay: self.pay_intake.clone(),
        });
        let jobs = Data::new(JobsState {
            clock: self.clock.clone(),
            wake: self.wake.clone(),
            gauges: vec![Arc::new(self.breaker.clone())],
            registry: self.registry.clone(),
        });
        let payments = Data::new(crate::payments::admin::PaymentsState { breaker: self.breaker.clone() });
        let merchants = Data::new(MerchantsState {
            clock: self.clock.clone(),
            tokens: TokenKey::new(&self.api_token_secret).expect("API token secrets are at least 32 bytes"),
            limits: self.limits,
            intake: self.intake.clone(),
            refund_attempts: self.refund_attempts,
            processor: self.processor.clone(),
            wake: self.wake.clone(),
            logins: self.logins.clone(),
            hashing: self.hashing.clone(),
        });
        let chat = Data::new(crate::chat::ChatState {
            clock: self.clock.clone(),
            limiter: crate::chat::limits::RateLimiter::new(self.cache.clone(), self.chat_rate),
            intake: self.chat_intake.clone(),
            search: Arc::new(crate::chat::search::PostgresSearch),
            known: Default::default(),
        });
        let threads = Data::new(ThreadsState { clock: self.clock.clone(), threads: self.threads.clone() });
        let (pool, cache) = (Data::new(self.pool.clone()), Data::new(self.cache.clone()));
        let read_pool = self.read_pool.clone().map(|p| Data::new(crate::web::ReadPool(p)));
        Arc::new(move |cfg| {
            if let Some(read_pool) = &read_pool {
                cfg.app_data(read_pool.clone());
            }
            cfg.app_data(pool.clone())
                .app_data(cache.clone())
                .app_data(identify.clone())
                .app_data(bearers.clone())
                .app_data(auth.clone())
                .app_data(orders.clone())
                .app_data(jobs.clone())
                .app_data(payments.clone())
                .app_data(threads.clone())
                .app_data(merchants.clone())
                .app_data(chat.clone());
            crate::auth::routes::configure(cfg);
            crate::orders::routes::configure(cfg);
            crate::payments::routes::configure(cfg);
            crate::payments::admin::configure(cfg);
            crate::jobs::routes::configure(cfg);
            crate::threads::routes::configure(cfg);
            cfg.app_data(Data::new(crate::web::openapi::ApiTables(api_tables())));
            cfg.service(api_scope());
            crate::merchants::pages::configure(cfg);
            crate::chat::pages::configure(cfg);
        })
    }

    pub fn start_workers(&self) -> WorkerPool {
        WorkerPool::start(
            self.worker_settings(),
            jobs::worker::PoolParts {
                pool: self.pool.clone(),
                registry: self.registry.clone(),
                clock: self.clock.clone(),
                wake: self.wake.clone(),
                scheduler: Some(self.scheduler.clone()),
            },
        )
    }
}

/// Every area's JSON API, for the OpenAPI document and the answers to unrouted requests.
pub fn api_tables() -> Vec<&'static crate::web::openapi::Table> {
    vec![&crate::merchants::api::TABLE, &crate::chat::routes::TABLE]
}

/// `/api/v1`: every area's JSON routes in one scope (a second scope with the same prefix would
/// never be reached), the OpenAPI document, and a JSON 404 for the rest.
fn api_scope() -> actix_web::Scope {
    use actix_web::web;
    let scope = web::scope("/api/v1").route("/openapi.json", web::get().to(crate::web::openapi::document));
    let scope = crate::chat::routes::mount(scope);
    crate::merchants::api::mount(scope).default_service(web::to(crate::web::openapi::unrouted))
}

pub fn periodic_jobs() -> Vec<Periodic> {
    let minute = Duration::from_secs(60);
    vec![
        Periodic { kind: pipeline::EXPIRE_ORDERS, every: minute },
        Periodic { kind: pipeline::RECONCILE_PAYMENTS, every: minute },
        Periodic { kind: RECONCILE_COUNTERS, every: 10 * minute },
        Periodic { kind: jobs::PRUNE_JOBS, every: 60 * minute },
        Periodic { kind: jobs::PRUNE_SESSIONS, every: 60 * minute },
        Periodic { kind: PRUNE_API_KEYS, every: 60 * minute },
        Periodic { kind: CHECK_INVARIANTS, every: 24 * 60 * minute },
        Periodic { kind: crate::chat::jobs::RECONCILE_CHAT_COUNTS, every: 60 * minute },
    ]
}
