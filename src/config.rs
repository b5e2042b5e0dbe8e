//! Settings, read once from the environment at start-up.

use std::time::Duration;

#[derive(Debug, Clone)]
pub enum GatewayConfig {
    /// The in-process simulated gateway (no network).
    /// Answers after `latency`, give or take up to `jitter`.
    Simulated { success_rate: f64, timeout_rate: f64, latency: Duration, jitter: Duration, seed: Option<u64> },
    /// A Stripe-like HTTP API, such as `agora gateway-sim`.
    Http { base_url: String, timeout: Duration },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    /// A streaming replica for the dashboard's lists, totals, chart and exports
    /// (`DATABASE_READ_URL`); unset: everything reads the primary.
    pub database_read_url: Option<String>,
    /// `DATABASE_PREPARED_STATEMENTS=off` behind a pooler in transaction mode (see
    /// `db::Statements`).
    pub db_statements: crate::db::Statements,
    pub db_pool_size: u32,
    pub redis_url: Option<String>,
    /// Prepended to every Redis key, so that several apps (or tests) can share one server.
    pub redis_prefix: String,
    /// Every Redis command's deadline, and how long Redis is skipped after a failure.
    pub redis_timeout: Duration,
    pub redis_rest: Duration,
    /// Reverse proxies in front of the app that append to `X-Forwarded-For` (0: none, the peer
    /// address is the client's). Only then is that header believed, and only its last N entries.
    /// After SIGTERM, how long `/readyz` answers 503 before the server stops accepting (the proxy's
    /// health checks take it out meanwhile), in seconds (`DRAIN_SECS`).
    pub drain_secs: u64,
    pub trusted_proxy_hops: usize,
    pub host: String,
    pub port: u16,
    pub gateway: GatewayConfig,
    /// Sends each request's database query count back as `X-Db-Queries`.
    pub query_count_header: bool,
    /// Signs and encrypts session cookies; at least 64 bytes.
    pub session_secret: Option<Vec<u8>>,
    /// The site is served over HTTPS: cookies are `Secure` and HSTS is sent.
    pub secure_cookies: bool,
    pub payments: PaymentSettings,
    pub jobs: JobSettings,
    pub auth: AuthSettings,
    /// Payments one user may start in an hour before the fraud rules refuse more.
    pub fraud_velocity_max: i64,
    /// A bearer token for Prometheus to read `/metrics` with; unset: administrators only.
    pub metrics_token: Option<String>,
    pub chat_rate: RateSettings,
    /// Chats and messages accepted through Redis (`CHAT_INTAKE=redis`, the default when Redis is
    /// configured) or numbered in PostgreSQL (`CHAT_INTAKE=postgres`).
    pub chat_intake_redis: bool,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Failed sign-ins per account, and per IP address, before sign-in answers 429.
    pub max_login_failures: i64,
    pub login_window: Duration,
    /// Threads that hash passwords, and sign-ins that may wait for one before the answer is 503.
    pub hash_threads: usize,
    pub hash_queue: usize,
    pub session_ttl: Duration,
    /// How long a session's user (name, roles) may be served from Redis before it is read again.
    pub session_cache_ttl: Duration,
    /// The key that signs API bearer tokens (at least 32 bytes). Every server process must share
    /// it; without one each process makes its own, and tokens work only where they were issued.
    pub api_token_secret: Option<Vec<u8>>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            max_login_failures: 10,
            login_window: Duration::from_secs(15 * 60),
            hash_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            hash_queue: 256,
            session_ttl: Duration::from_secs(7 * 24 * 3600),
            session_cache_ttl: Duration::from_secs(30),
            api_token_secret: None,
        }
    }
}

/// A rate limit per key: requests per second, and the burst that always passes (the chat API's,
/// per application token).
#[derive(Debug, Clone, Copy)]
pub struct RateSettings {
    pub per_second: f64,
    pub burst: u32,
    /// Tokens naming no application that one client address may send per window before all
    /// its requests are refused for the window's rest (`CHAT_TOKEN_MISSES`,
    /// `CHAT_TOKEN_MISS_WINDOW_SECS`).
    pub misses: u32,
    pub miss_window_secs: u64,
}

impl Default for RateSettings {
    fn default() -> Self {
        RateSettings { per_second: 100.0, burst: 100, misses: 30, miss_window_secs: 60 }
    }
}

#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Worker threads in this process; 0 runs none (web only).
    pub workers: usize,
    pub batch: i64,
    pub lease: Duration,
    /// Ready jobs the payments queue may hold before checkout answers 503.
    pub max_ready: i64,
    pub charge_backoff_base: Duration,
    pub order_ttl: Duration,
    /// Unpaid orders one account may hold at once (stock is reserved for each).
    pub max_unpaid_orders: i64,
    /// Charges this process may have waiting on the gateway at once, shared by its workers.
    pub charges_in_flight: usize,
    pub breaker_threshold: i32,
    pub breaker_cooldown: Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            workers: 4,
            batch: 20,
            lease: Duration::from_secs(30),
            max_ready: 10_000,
            charge_backoff_base: Duration::from_secs(5),
            order_ttl: Duration::from_secs(1800),
            max_unpaid_orders: 5,
            charges_in_flight: 500,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// Gateway attempts a payment gets (its charge job gets as many): the one setting for it.
    pub max_attempts: i32,
    /// How long a claimed attempt is presumed alive; after it, the attempt is recovered through
    /// the gateway's lookup.
    pub processing_lease: Duration,
    /// The first pause before a payment awaiting confirmation is looked up again; it doubles
    /// with every unanswered check, up to `confirm_backoff_max`.
    pub confirm_backoff_base: Duration,
    pub confirm_backoff_max: Duration,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            max_attempts: 5,
            processing_lease: Duration::from_secs(60),
            confirm_backoff_base: Duration::from_secs(60),
            confirm_backoff_max: Duration::from_secs(6 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parsed<T: std::str::FromStr>(name: &str, default: T) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| ConfigError(format!("{name}={v:?} is not valid"))),
    }
}

/// The session secret kept in a file: read if it is there, otherwise made once (64 random hex
/// characters, readable by its owner only) so that every later start finds the same one.
fn secret_from_file(path: &str) -> Result<String, ConfigError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(existing) = std::fs::read_to_string(path) {
        return Ok(existing.trim().to_string());
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(secret.as_bytes()));
    match written {
        Ok(()) => Ok(secret),
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(|e| ConfigError(format!("{path}: {e}")))
        }
        Err(e) => Err(ConfigError(format!("SESSION_SECRET_FILE {path}: {e}"))),
    }
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        let database_url = var("DATABASE_URL")
            .ok_or_else(|| ConfigError("DATABASE_URL is not set (`make run` sets it)".into()))?;
        let gateway = match var("GATEWAY_URL") {
            Some(base_url) => GatewayConfig::Http {
                base_url,
                timeout: Duration::from_millis(parsed("GATEWAY_TIMEOUT_MS", 5_000)?),
            },
            None => GatewayConfig::Simulated {
                success_rate: parsed("GATEWAY_SUCCESS_RATE", 0.7)?,
                timeout_rate: parsed("GATEWAY_TIMEOUT_RATE", 0.2)?,
                latency: Duration::from_millis(parsed("GATEWAY_LATENCY_MS", 0)?),
                jitter: Duration::from_millis(parsed("GATEWAY_JITTER_MS", 0)?),
                seed: var("GATEWAY_SEED").and_then(|s| s.parse().ok()),
            },
        };
        let session_secret = match var("SESSION_SECRET") {
            Some(s) => Some(s),
            None => match var("SESSION_SECRET_FILE") {
                Some(path) => Some(secret_from_file(&path)?),
                None => None,
            },
        };
        let session_secret = match session_secret {
            None => None,
            Some(s) if s.len() >= 64 => Some(s.into_bytes()),
            Some(_) => return Err(ConfigError("SESSION_SECRET must be at least 64 bytes".into())),
        };
        let api_token_secret = match var("API_TOKEN_SECRET") {
            Some(s) if s.len() >= 32 => Some(s.into_bytes()),
            Some(_) => return Err(ConfigError("API_TOKEN_SECRET must be at least 32 bytes".into())),
            // Derived from the session secret: one secret to provision, a different key per use.
            None => session_secret.as_ref().map(|s| {
                use sha2::Digest;
                sha2::Sha256::digest([b"agora api tokens\0".as_slice(), s].concat()).to_vec()
            }),
        };
        Ok(Config {
            database_url,
            database_read_url: var("DATABASE_READ_URL"),
            db_pool_size: parsed("DB_POOL_SIZE", 16)?,
            db_statements: match var("DATABASE_PREPARED_STATEMENTS").as_deref() {
                None | Some("on") => crate::db::Statements::Prepared,
                Some("off") => crate::db::Statements::Unprepared,
                Some(other) => return Err(ConfigError(format!("DATABASE_PREPARED_STATEMENTS is on or off, not {other:?}"))),
            },
            redis_url: var("REDIS_URL"),
            redis_prefix: var("REDIS_PREFIX").unwrap_or_else(|| "agora:".into()),
            redis_timeout: Duration::from_millis(parsed("REDIS_TIMEOUT_MS", crate::cache::DEADLINE.as_millis() as u64)?),
            redis_rest: Duration::from_millis(parsed("REDIS_REST_MS", crate::cache::REST.as_millis() as u64)?),
            trusted_proxy_hops: parsed("TRUSTED_PROXY_HOPS", 0)?,
            drain_secs: parsed("DRAIN_SECS", 5)?,
            host: var("HOST").unwrap_or_else(|| "127.0.0.1".into()),
            port: parsed("PORT", 8080)?,
            gateway,
            query_count_header: var("QUERY_COUNT_HEADER").is_some_and(|v| v == "1" || v == "true"),
            session_secret,
            secure_cookies: var("SECURE_COOKIES").is_some_and(|v| v == "1" || v == "true"),
            payments: {
                let d = PaymentSettings::default();
                PaymentSettings {
                    max_attempts: parsed("PAYMENT_MAX_ATTEMPTS", d.max_attempts)?.max(1),
                    processing_lease: Duration::from_secs(parsed("PAYMENT_PROCESSING_LEASE_SECS", d.processing_lease.as_secs())?),
                    confirm_backoff_base: Duration::from_secs(parsed("PAYMENT_CONFIRM_BACKOFF_SECS", d.confirm_backoff_base.as_secs())?),
                    confirm_backoff_max: Duration::from_secs(parsed("PAYMENT_CONFIRM_BACKOFF_MAX_SECS", d.confirm_backoff_max.as_secs())?),
                }
            },
            fraud_velocity_max: parsed("FRAUD_VELOCITY_MAX", 20)?,
            metrics_token: var("METRICS_TOKEN"),
            chat_intake_redis: match var("CHAT_INTAKE").as_deref() {
                None | Some("redis") => var("REDIS_URL").is_some(),
                Some("postgres") => false,
                Some(other) => return Err(ConfigError(format!("CHAT_INTAKE must be redis or postgres, not {other:?}"))),
            },
            chat_rate: {
                let d = RateSettings::default();
                RateSettings {
                    per_second: parsed("CHAT_RATE_PER_SEC", d.per_second)?,
                    burst: parsed("CHAT_RATE_BURST", d.burst)?.max(50),
                    misses: parsed("CHAT_TOKEN_MISSES", d.misses)?.max(1),
                    miss_window_secs: parsed("CHAT_TOKEN_MISS_WINDOW_SECS", d.miss_window_secs)?.max(1),
                }
            },
            auth: {
                let d = AuthSettings::default();
                AuthSettings {
                    max_login_failures: parsed("LOGIN_MAX_FAILURES", d.max_login_failures)?,
                    login_window: Duration::from_secs(parsed("LOGIN_WINDOW_SECS", d.login_window.as_secs())?),
                    hash_threads: parsed("HASH_THREADS", d.hash_threads)?.max(1),
                    hash_queue: parsed("HASH_QUEUE", d.hash_queue)?.max(1),
                    session_ttl: Duration::from_secs(parsed("SESSION_TTL_SECS", d.session_ttl.as_secs())?),
                    session_cache_ttl: d.session_cache_ttl,
                    api_token_secret,
                }
            },
            jobs: {
                let d = JobSettings::default();
                JobSettings {
                    workers: parsed("WORKERS", d.workers)?,
                    batch: parsed("JOB_BATCH", d.batch)?,
                    lease: Duration::from_secs(parsed("JOB_LEASE_SECS", d.lease.as_secs())?),
                    max_ready: parsed("QUEUE_MAX_READY", d.max_ready)?,
                    charge_backoff_base: Duration::from_secs(parsed("CHARGE_BACKOFF_BASE_SECS", d.charge_backoff_base.as_secs())?),
                    order_ttl: Duration::from_secs(parsed("ORDER_TTL_SECS", d.order_ttl.as_secs())?),
                    max_unpaid_orders: parsed("MAX_UNPAID_ORDERS", d.max_unpaid_orders)?,
                    charges_in_flight: parsed("CHARGES_IN_FLIGHT", d.charges_in_flight)?.max(1),
                    breaker_threshold: parsed("BREAKER_THRESHOLD", d.breaker_threshold)?,
                    breaker_cooldown: Duration::from_secs(parsed("BREAKER_COOLDOWN_SECS", d.breaker_cooldown.as_secs())?),
                }
            },
        })
    }
}
