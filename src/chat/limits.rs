//! Rate limits per application token: GCRA (the generic cell rate algorithm), one Redis key per
//! token holding its "theoretical arrival time", checked and moved in one Lua call, so every
//! server process shares the limit. A burst of `burst` requests always passes; after that,
//! requests pass at `per_second`. When Redis is away the same rule runs in this process's memory:
//! weaker (each process allows the rate), never none.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::cache::Cache;

pub use crate::config::RateSettings;

/// What the `RateLimit-*` headers say after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: u64,
}

/// Refused: try again after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: u64,
    pub limit: u32,
}

const GCRA: &str = r#"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
if now < tat - tolerance then
  return {0, tat}
end
local next = tat + interval
redis.call('SET', KEYS[1], next, 'PX', math.ceil(next - now + interval))
return {1, next}
"#;

/// A token's GCRA cell and the parameters to check it with.
#[derive(Debug, Clone)]
pub struct RateCell {
    pub key: String,
    pub now_ms: i64,
    pub interval_ms: f64,
    pub tolerance_ms: f64,
}

pub struct RateLimiter {
    cache: Cache,
    settings: RateSettings,
    local: Mutex<HashMap<String, f64>>,
}

impl RateLimiter {
    pub fn new(cache: Cache, settings: RateSettings) -> RateLimiter {
        RateLimiter { cache, settings, local: Mutex::new(HashMap::new()) }
    }

    fn interval_ms(&self) -> f64 {
        1000.0 / self.settings.per_second.max(0.001)
    }

    fn tolerance_ms(&self) -> f64 {
        self.interval_ms() * f64::from(self.settings.burst.max(1) - 1)
    }

    /// Counts one request of this token at `now_ms`.
    pub async fn check(&self, token: &str, now_ms: i64) -> Result<Allowance, Limited> {
        let (interval, tolerance) = (self.interval_ms(), self.tolerance_ms());
        let args = [now_ms.to_string(), format!("{interval:.3}"), format!("{tolerance:.3}")];
        let key = format!("chat:rate:{token}");
        let (allowed, tat) = match self.cache.eval::<(i64, f64)>(GCRA, &[&key], &args).await {
            Ok(answer) => answer,
            Err(_) => self.check_locally(token, now_ms as f64),
        };
        self.verdict(allowed == 1, tat, now_ms as f64)
    }

    fn check_locally(&self, token: &str, now: f64) -> (i64, f64) {
        let (interval, tolerance) = (self.interval_ms(), self.tolerance_ms());
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if local.len() > 100_000 {
            local.retain(|_, tat| *tat > now);
        }
        let tat = local.get(token).copied().unwrap_or(now).max(now);
        if now < tat - tolerance {
            return (0, tat);
        }
        local.insert(token.to_string(), tat + interval);
        (1, tat + interval)
    }

    /// The GCRA cell a token's requests are counted in, for a check made elsewhere (the chat
    /// intake folds it into its accept call): key, now, interval and tolerance.
    pub fn cell(&self, token: &str, now_ms: i64) -> RateCell {
        RateCell { key: format!("chat:rate:{token}"), now_ms, interval_ms: self.interval_ms(), tolerance_ms: self.tolerance_ms() }
    }

    /// What a check made elsewhere decided, as headers or a refusal.
    pub fn verdict(&self, allowed: bool, tat: f64, now: f64) -> Result<Allowance, Limited> {
        let (interval, tolerance) = (self.interval_ms(), self.tolerance_ms());
        let limit = self.settings.burst;
        if !allowed {
            let wait_ms = (tat - tolerance - now).max(0.0);
            return Err(Limited { retry_after: (wait_ms / 1000.0).ceil().max(1.0) as u64, limit });
        }
        let remaining = (((now + tolerance - tat) / interval).floor() + 1.0).max(0.0) as u32;
        let reset = ((tat - now).max(0.0) / 1000.0).ceil() as u64;
        Ok(Allowance { limit, remaining: remaining.min(limit), reset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_without_redis() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(burst_then_rate());
    }

    async fn burst_then_rate() {
        let limiter = RateLimiter::new(Cache::disabled(), RateSettings { per_second: 10.0, burst: 50 });
        for i in 0..50 {
            let allowance = limiter.check("t", 1_000_000).await.unwrap_or_else(|_| panic!("request {i} of the burst"));
            assert_eq!(allowance.remaining, 49 - i);
        }
        let refused = limiter.check("t", 1_000_000).await.unwrap_err();
        assert_eq!(refused, Limited { retry_after: 1, limit: 50 });
        assert!(limiter.check("t", 1_000_100).await.is_ok(), "one more each 100 ms");
        assert!(limiter.check("other", 1_000_000).await.is_ok(), "per token");
    }
}
