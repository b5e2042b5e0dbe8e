//! Redis: caches, counters and limits that can all be rebuilt. Nothing here may be the only copy
//! of anything, and every caller must cope with Redis being away: the app then runs uncached.
//!
//! "Away" includes hanging: every command has a short deadline (`REDIS_TIMEOUT_MS`, 50 ms by
//! default) and after a failure Redis is left alone for a moment (`REST`), so a stalled server
//! costs a few requests one deadline each and the requests after it nothing, until a probe finds
//! it answering again. A refused connection is a failure at once; late answers only once calls
//! have been late for `SILENT_FOR` with no answer in between: on a saturated machine a burst of commands misses 50 ms
//! together while Redis is fine, and resting then sent a whole second of sessions to PostgreSQL
//! (`bench/results.md` counts them; `agora_redis_errors_total` counts each kind).

use deadpool_redis::{Config as RedisConfig, Pool, PoolConfig, Runtime, Timeouts};
use redis::FromRedisValue;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Deadline and rest, by default.
pub const DEADLINE: Duration = Duration::from_millis(50);
pub const REST: Duration = Duration::from_secs(1);
/// How long calls may be late, with no answer in between, before Redis counts as away.
const SILENT_FOR: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Cache {
    pool: Option<Pool>,
    url: Option<String>,
    prefix: String,
    deadline: Duration,
    /// How long Redis is skipped after it failed, before one request tries it again.
    rest: Duration,
    // Whether the last operation failed: the log says so once per outage, not once per request.
    down: Arc<AtomicBool>,
    resting_until: Arc<Mutex<Option<Instant>>>,
    /// When the current run of late calls began, in ms since `born` (`u64::MAX`: the last call
    /// was answered).
    late_since: Arc<std::sync::atomic::AtomicU64>,
    born: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("Redis is not configured")]
    NotConfigured,
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
    /// The command was sent but no answer came in time: it may or may not have run.
    #[error("Redis did not answer in time: {0}")]
    Late(String),
}

impl Cache {
    pub fn new(url: Option<&str>, prefix: &str) -> Cache {
        Cache::with_timing(url, prefix, DEADLINE, REST)
    }

    pub fn with_timing(url: Option<&str>, prefix: &str, deadline: Duration, rest: Duration) -> Cache {
        let pool = url.and_then(|url| {
            let mut cfg = RedisConfig::from_url(url);
            cfg.pool = Some(PoolConfig {
                max_size: 16,
                timeouts: Timeouts { wait: Some(deadline), create: Some(deadline), recycle: Some(deadline) },
                ..PoolConfig::default()
            });
            match cfg.create_pool(Some(Runtime::Tokio1)) {
                Ok(pool) => Some(pool),
                Err(e) => {
                    log::warn!("Redis disabled, bad REDIS_URL: {e}");
                    None
                }
            }
        });
        Cache {
            pool,
            url: url.map(str::to_string),
            prefix: prefix.to_string(),
            deadline,
            rest,
            down: Arc::new(AtomicBool::new(false)),
            resting_until: Arc::new(Mutex::new(None)),
            late_since: Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
            born: Instant::now(),
        }
    }

    /// The same Redis with its own connections and deadline, for work that may wait longer than
    /// a page should (the chat intake under load). It never rests: every call tries Redis, and
    /// the caller decides how long a silence may last (the intake has its own grace). Resting
    /// there would refuse every create for a second after one late answer on a busy box.
    pub fn separate(&self, deadline: Duration) -> Cache {
        Cache::with_timing(self.url.as_deref(), &self.prefix, deadline, Duration::ZERO)
    }

    /// The same Redis with its own connections and at least `deadline` a call, resting as this one
    /// does: for reads whose fallback costs more than waiting a little longer (sessions).
    pub fn patient(&self, deadline: Duration) -> Cache {
        Cache::with_timing(self.url.as_deref(), &self.prefix, self.deadline.max(deadline), self.rest)
    }

    /// A cache that is never there: the app's behaviour with Redis down.
    pub fn disabled() -> Cache {
        Cache::new(None, "")
    }

    pub fn key(&self, suffix: &str) -> String {
        format!("{}{}", self.prefix, suffix)
    }

    fn resting(&self) -> bool {
        let mut until = self.resting_until.lock().unwrap();
        match *until {
            Some(t) if Instant::now() < t => {
                crate::metrics::metrics().redis_errors.with_label_values(&["skipped"]).inc();
                true
            }
            Some(_) => {
                *until = None; // this caller probes
                false
            }
            None => false,
        }
    }

    /// Runs a command (or a pipeline) on a pooled connection within the deadline.
    async fn query<T: FromRedisValue>(&self, command: Command<'_>) -> Result<T, CacheError> {
        let pool = self.pool.as_ref().ok_or(CacheError::NotConfigured)?;
        if self.resting() {
            return Err(CacheError::Unavailable("resting after a failure".into()));
        }
        let attempt = async {
            // The pool's own timeouts (waiting for, opening or checking a connection) are the
            // same deadline missed: late, not broken.
            let mut conn = pool.get().await.map_err(|e| match e {
                deadpool_redis::PoolError::Timeout(_) => None,
                other => Some(other.to_string()),
            })?;
            // A command abandoned at the deadline is harmless: the connection is multiplexed, and
            // its late reply is matched to the dropped request and discarded.
            match command {
                Command::One(cmd) => cmd.query_async::<T>(&mut *conn).await,
                Command::Many(pipe) => pipe.query_async::<T>(&mut *conn).await,
            }
            .map_err(|e| Some(e.to_string()))
        };
        match tokio::time::timeout(self.deadline, attempt).await {
            Ok(Ok(value)) => {
                self.recovered();
                Ok(value)
            }
            Ok(Err(Some(why))) => Err(self.broken(why)),
            Ok(Err(None)) | Err(_) => Err(self.late()),
        }
    }

    async fn run<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheError> {
        self.query(Command::One(cmd)).await
    }

    /// Sets a key with no expiry (for what volatile-lru must never evict).
    pub async fn set_forever(&self, key: &str, value: &str) -> Result<(), CacheError> {
        self.run::<()>(redis::cmd("SET").arg(self.key(key)).arg(value)).await
    }

    /// Runs any command within the deadline. Its keys must already carry the prefix (`key`).
    pub async fn command<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheError> {
        self.run(cmd).await
    }

    /// Runs a Lua script (atomic in Redis) on these keys (prefixed here) and arguments.
    pub async fn eval<T: FromRedisValue>(&self, script: &str, keys: &[&str], args: &[String]) -> Result<T, CacheError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.len());
        for key in keys {
            cmd.arg(self.key(key));
        }
        for arg in args {
            cmd.arg(arg);
        }
        self.run(&cmd).await
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        self.run::<String>(&redis::cmd("PING")).await.map(drop)
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        self.run(redis::cmd("GET").arg(self.key(key))).await
    }

    /// Many keys in one round trip (in chunks, to keep each reply bounded).
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, CacheError> {
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let mut cmd = redis::cmd("MGET");
            for key in chunk {
                cmd.arg(self.key(key));
            }
            let part: Vec<Option<String>> = self.run(&cmd).await?;
            values.extend(part);
        }
        Ok(values)
    }

    pub async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CacheError> {
        self.run(redis::cmd("SET").arg(self.key(key)).arg(value).arg("EX").arg(ttl.as_secs().max(1))).await
    }

    /// Sets the key unless it exists; returns the value the key holds afterwards.
    pub async fn set_if_absent(&self, key: &str, value: &str, ttl: Duration) -> Result<String, CacheError> {
        let set: Option<String> =
            self.run(redis::cmd("SET").arg(self.key(key)).arg(value).arg("NX").arg("GET").arg("EX").arg(ttl.as_secs().max(1))).await?;
        Ok(set.unwrap_or_else(|| value.to_string()))
    }

    pub async fn set_many(&self, entries: &[(String, String)], ttl: Duration) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.query(Command::Many(&self.set_pipeline(entries, ttl))).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.run::<i64>(redis::cmd("DEL").arg(self.key(key))).await.map(drop)
    }

    pub async fn delete_many(&self, keys: &[String]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("DEL");
        for key in keys {
            cmd.arg(self.key(key));
        }
        self.run::<i64>(&cmd).await.map(drop)
    }

    /// Counts one more event in the window that `key` opens: the window starts at the first event
    /// and lasts `window`. Returns the count so far.
    pub async fn count_in_window(&self, key: &str, window: Duration) -> Result<i64, CacheError> {
        let key = self.key(key);
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&key).arg(0).arg("NX").arg("EX").arg(window.as_secs().max(1)).ignore();
        pipe.cmd("INCR").arg(&key);
        let (count,): (i64,) = self.query(Command::Many(&pipe)).await?;
        Ok(count)
    }

    /// Takes one back from a window's count, if the window is still open (a key that has expired
    /// is not brought back without its expiry).
    pub async fn uncount(&self, key: &str) -> Result<(), CacheError> {
        let script = "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end return 0";
        self.run::<i64>(redis::cmd("EVAL").arg(script).arg(1).arg(self.key(key))).await.map(drop)
    }

    /// For each key, its count and how long its window still runs (in one round trip).
    pub async fn window_counts(&self, keys: &[String]) -> Result<Vec<(i64, Duration)>, CacheError> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("GET").arg(self.key(key)).cmd("PTTL").arg(self.key(key));
        }
        let replies: Vec<(Option<i64>, i64)> = self.query(Command::Many(&pipe)).await?;
        Ok(replies.into_iter().map(|(count, ttl)| (count.unwrap_or(0), Duration::from_millis(ttl.max(0) as u64))).collect())
    }

    fn set_pipeline(&self, entries: &[(String, String)], ttl: Duration) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for (key, value) in entries {
            pipe.cmd("SET").arg(self.key(key)).arg(value).arg("EX").arg(ttl.as_secs().max(1)).ignore();
        }
        pipe
    }

    /// `set_many` for code on worker threads (jobs), outside any async runtime: one connection,
    /// the same deadline for connecting, writing and reading.
    pub fn set_many_blocking(&self, entries: &[(String, String)], ttl: Duration) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let url = self.url.as_deref().ok_or(CacheError::NotConfigured)?;
        if self.resting() {
            return Err(CacheError::Unavailable("resting after a failure".into()));
        }
        let pipe = self.set_pipeline(entries, ttl);
        let result = redis::Client::open(url)
            .and_then(|client| client.get_connection_with_timeout(self.deadline))
            .and_then(|mut conn| {
                conn.set_read_timeout(Some(self.deadline))?;
                conn.set_write_timeout(Some(self.deadline))?;
                pipe.query::<()>(&mut conn)
            });
        match result {
            Ok(()) => {
                self.recovered();
                Ok(())
            }
            Err(e) => Err(self.broken(e.to_string())),
        }
    }

    /// Redis refused or broke the call: it is away, and rests from now.
    fn broken(&self, why: String) -> CacheError {
        crate::metrics::metrics().redis_errors.with_label_values(&["unavailable"]).inc();
        self.rest(&why);
        CacheError::Unavailable(why)
    }

    /// No answer within the deadline: away only once calls have been late for `SILENT_FOR` with
    /// no answer in between.
    fn late(&self) -> CacheError {
        let why = format!("no answer within {} ms", self.deadline.as_millis());
        crate::metrics::metrics().redis_errors.with_label_values(&["late"]).inc();
        let now_ms = self.born.elapsed().as_millis() as u64;
        // The first late call of a run starts it; later ones find when it started.
        let since = self.late_since.compare_exchange(u64::MAX, now_ms, Ordering::Relaxed, Ordering::Relaxed).map_or_else(|earlier| earlier, |_| now_ms);
        if now_ms.saturating_sub(since) >= SILENT_FOR.as_millis() as u64 {
            self.rest(&why);
        }
        CacheError::Late(why)
    }

    fn rest(&self, why: &str) {
        self.late_since.store(u64::MAX, Ordering::Relaxed);
        *self.resting_until.lock().unwrap() = Some(Instant::now() + self.rest);
        if !self.down.swap(true, Ordering::Relaxed) {
            log::warn!("Redis is unavailable, serving uncached until it is back: {why}");
        }
    }

    fn recovered(&self) {
        self.late_since.store(u64::MAX, Ordering::Relaxed);
        if self.down.swap(false, Ordering::Relaxed) {
            log::info!("Redis is back");
        }
    }
}

enum Command<'a> {
    One(&'a redis::Cmd),
    Many(&'a redis::Pipeline),
}

/// Removes every key under `prefix` (one installation's namespace: a test's, a benchmark's), with
/// `SCAN` and `UNLINK` so that Redis never blocks on it. Returns how many keys went.
pub fn forget_namespace(url: &str, prefix: &str) -> redis::RedisResult<usize> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let (mut cursor, mut forgotten) = (0u64, 0usize);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(format!("{prefix}*")).arg("COUNT").arg(1000).query(&mut conn)?;
        if !keys.is_empty() {
            forgotten += redis::cmd("UNLINK").arg(&keys).query::<usize>(&mut conn)?;
        }
        if next == 0 {
            return Ok(forgotten);
        }
        cursor = next;
    }
}
