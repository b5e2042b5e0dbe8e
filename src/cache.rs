//! Redis: caches, counters and limits that can all be rebuilt. Nothing here may be the only copy
//! of anything, and every caller must cope with Redis being away: the app then runs uncached.

use deadpool_redis::{Config as RedisConfig, Pool, PoolConfig, Runtime, Timeouts};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct Cache {
    pool: Option<Pool>,
    url: Option<String>,
    prefix: String,
    // Whether the last operation failed: the log says so once per outage, not once per request.
    down: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("Redis is not configured")]
    NotConfigured,
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
}

impl Cache {
    pub fn new(url: Option<&str>, prefix: &str) -> Cache {
        let pool = url.and_then(|url| {
            let mut cfg = RedisConfig::from_url(url);
            let short = Some(Duration::from_millis(500));
            cfg.pool = Some(PoolConfig {
                max_size: 16,
                timeouts: Timeouts { wait: short, create: short, recycle: short },
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
        Cache { pool, url: url.map(str::to_string), prefix: prefix.to_string(), down: Arc::new(AtomicBool::new(false)) }
    }

    /// A cache that is never there: the app's behaviour with Redis down.
    pub fn disabled() -> Cache {
        Cache::new(None, "")
    }

    pub fn key(&self, suffix: &str) -> String {
        format!("{}{}", self.prefix, suffix)
    }

    pub async fn connection(&self) -> Result<deadpool_redis::Connection, CacheError> {
        let pool = self.pool.as_ref().ok_or(CacheError::NotConfigured)?;
        match pool.get().await {
            Ok(conn) => Ok(conn),
            Err(e) => Err(self.failed(e.to_string())),
        }
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        let mut conn = self.connection().await?;
        let reply: Result<String, _> = redis::cmd("PING").query_async(&mut *conn).await;
        match reply {
            Ok(_) => {
                self.recovered();
                Ok(())
            }
            Err(e) => Err(self.failed(e.to_string())),
        }
    }

    /// Runs one command on a pooled connection, logging an outage once.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheError> {
        let mut conn = self.connection().await?;
        match cmd.query_async::<T>(&mut *conn).await {
            Ok(value) => {
                self.recovered();
                Ok(value)
            }
            Err(e) => Err(self.failed(e.to_string())),
        }
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
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        for (key, value) in entries {
            pipe.cmd("SET").arg(self.key(key)).arg(value).arg("EX").arg(ttl.as_secs().max(1)).ignore();
        }
        match pipe.query_async::<()>(&mut *conn).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failed(e.to_string())),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.run::<i64>(redis::cmd("DEL").arg(self.key(key))).await.map(drop)
    }

    /// `set_many` for code on worker threads (jobs), outside any async runtime: one connection.
    pub fn set_many_blocking(&self, entries: &[(String, String)], ttl: Duration) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let url = self.url.as_deref().ok_or(CacheError::NotConfigured)?;
        let mut pipe = redis::pipe();
        for (key, value) in entries {
            pipe.cmd("SET").arg(self.key(key)).arg(value).arg("EX").arg(ttl.as_secs().max(1)).ignore();
        }
        let result = redis::Client::open(url)
            .and_then(|client| client.get_connection_with_timeout(Duration::from_millis(500)))
            .and_then(|mut conn| pipe.query::<()>(&mut conn));
        result.map_err(|e| self.failed(e.to_string()))
    }

    fn failed(&self, why: String) -> CacheError {
        if !self.down.swap(true, Ordering::Relaxed) {
            log::warn!("Redis is unavailable, serving uncached until it is back: {why}");
        }
        CacheError::Unavailable(why)
    }

    fn recovered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            log::info!("Redis is back");
        }
    }
}
