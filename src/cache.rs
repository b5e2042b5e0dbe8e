//! Redis: caches, counters and limits that can all be rebuilt. Nothing here may be the only copy
//! of anything, and every caller must cope with Redis being away: the app then runs uncached.

use deadpool_redis::{Config as RedisConfig, Pool, PoolConfig, Runtime, Timeouts};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct Cache {
    pool: Option<Pool>,
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
        Cache { pool, prefix: prefix.to_string(), down: Arc::new(AtomicBool::new(false)) }
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
