//! Rate limits per application token: GCRA (the generic cell rate algorithm), one Redis key per
//! token holding its "theoretical arrival time", checked and moved in one Lua call, so every
//! server process shares the limit. A burst of `burst` requests always passes; after that,
//! requests pass at `per_second`. When Redis is away the same rule runs in this process's memory:
//! weaker (each process allows the rate), never none.
//!
//! Guessing tokens is limited per client address: a token that names no application counts a
//! miss for the address (one key per address, never one per guessed token), and once the misses
//! in the window reach the limit every request from that address is refused until the window
//! ends — a right guess too, checked in the same call as the token's rate, so a blocked guesser
//! cannot tell a hit from a miss.

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
    /// Refused for the client's misses (guessing tokens), not for the token's rate.
    pub guessing: bool,
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.guessing {
            write!(f, "too many requests naming no application came from this address; retry after {} s", self.retry_after)
        } else {
            write!(f, "too many requests for this application; retry after {} s", self.retry_after)
        }
    }
}

// KEYS: the token's cell, the client's misses. ARGV: now, interval, tolerance, misses allowed.
// Answers {1, new TAT}, {0, TAT} (rate spent) or {-1, ms until the client may guess again}.
const GCRA: &str = r#"
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[4]) then
  return {-1, redis.call('PTTL', KEYS[2])}
end
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

// KEYS: the client's misses. ARGV: the window (ms). Answers {misses so far, ms left}.
const MISS: &str = r#"
local misses = redis.call('INCR', KEYS[1])
if misses == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {misses, redis.call('PTTL', KEYS[1])}
"#;

/// A token's GCRA cell and the parameters to check it with, with the client's misses key (a
/// client over its misses is refused before the cell is counted).
#[derive(Debug, Clone)]
pub struct RateCell {
    pub key: String,
    pub misses_key: String,
    pub misses_allowed: u32,
    pub now_ms: i64,
    pub interval_ms: f64,
    pub tolerance_ms: f64,
}

pub struct RateLimiter {
    cache: Cache,
    settings: RateSettings,
    local: Mutex<HashMap<String, f64>>,
    /// Misses per client address while Redis is away: (misses, window's end in ms).
    local_misses: Mutex<HashMap<String, (u32, i64)>>,
}

impl RateLimiter {
    pub fn new(cache: Cache, settings: RateSettings) -> RateLimiter {
        RateLimiter { cache, settings, local: Mutex::new(HashMap::new()), local_misses: Mutex::new(HashMap::new()) }
    }

    fn interval_ms(&self) -> f64 {
        1000.0 / self.settings.per_second.max(0.001)
    }

    fn tolerance_ms(&self) -> f64 {
        self.interval_ms() * f64::from(self.settings.burst.max(1) - 1)
    }

    fn misses_key(client: &str) -> String {
        format!("chat:misses:{client}")
    }

    fn window_ms(&self) -> i64 {
        (self.settings.miss_window_secs.max(1) * 1000) as i64
    }

    /// Counts one request of this token from `client` at `now_ms`.
    pub async fn check(&self, token: &str, client: &str, now_ms: i64) -> Result<Allowance, Limited> {
        let (interval, tolerance) = (self.interval_ms(), self.tolerance_ms());
        let args = [now_ms.to_string(), format!("{interval:.3}"), format!("{tolerance:.3}"), self.settings.misses.to_string()];
        let (key, misses) = (format!("chat:rate:{token}"), Self::misses_key(client));
        let (allowed, tat) = match self.cache.eval::<(i64, f64)>(GCRA, &[&key, &misses], &args).await {
            Ok((-1, wait_ms)) => return Err(self.guessing(wait_ms as i64)),
            Ok(answer) => answer,
            // Only while Redis is away do this process's own counts decide (and take its lock).
            Err(_) => match self.blocked_locally(client, now_ms) {
                Some(refused) => return Err(refused),
                None => self.check_locally(token, now_ms as f64),
            },
        };
        self.verdict(allowed == 1, tat, now_ms as f64)
    }

    /// Counts a token that named no application against `client`: `Err` once the client has
    /// missed as often as the window allows (this miss included).
    pub async fn missed(&self, client: &str, now_ms: i64) -> Result<(), Limited> {
        let (misses, wait_ms) = match self.cache.eval::<(i64, i64)>(MISS, &[&Self::misses_key(client)], &[self.window_ms().to_string()]).await {
            Ok(answer) => answer,
            Err(_) => self.miss_locally(client, now_ms),
        };
        if misses > i64::from(self.settings.misses) {
            return Err(self.guessing(wait_ms));
        }
        Ok(())
    }

    /// Refused for guessing: after the window's rest.
    pub fn guessing(&self, wait_ms: i64) -> Limited {
        Limited { retry_after: ((wait_ms.max(0) as f64) / 1000.0).ceil().max(1.0) as u64, limit: self.settings.burst, guessing: true }
    }

    fn miss_locally(&self, client: &str, now_ms: i64) -> (i64, i64) {
        let mut local = self.local_misses.lock().unwrap_or_else(|p| p.into_inner());
        if local.len() > 100_000 {
            local.retain(|_, (_, end)| *end > now_ms);
        }
        let window = self.window_ms();
        let entry = local.entry(client.to_string()).or_insert((0, now_ms + window));
        if entry.1 <= now_ms {
            *entry = (0, now_ms + window);
        }
        entry.0 += 1;
        (i64::from(entry.0), entry.1 - now_ms)
    }

    /// A client this process saw miss too often while Redis was away.
    fn blocked_locally(&self, client: &str, now_ms: i64) -> Option<Limited> {
        let local = self.local_misses.lock().unwrap_or_else(|p| p.into_inner());
        let (misses, end) = *local.get(client)?;
        (misses >= self.settings.misses && end > now_ms).then(|| self.guessing(end - now_ms))
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
    pub fn cell(&self, token: &str, client: &str, now_ms: i64) -> RateCell {
        RateCell {
            key: format!("chat:rate:{token}"),
            misses_key: Self::misses_key(client),
            misses_allowed: self.settings.misses,
            now_ms,
            interval_ms: self.interval_ms(),
            tolerance_ms: self.tolerance_ms(),
        }
    }

    /// What a check made elsewhere decided, as headers or a refusal.
    pub fn verdict(&self, allowed: bool, tat: f64, now: f64) -> Result<Allowance, Limited> {
        let (interval, tolerance) = (self.interval_ms(), self.tolerance_ms());
        let limit = self.settings.burst;
        if !allowed {
            let wait_ms = (tat - tolerance - now).max(0.0);
            return Err(Limited { retry_after: (wait_ms / 1000.0).ceil().max(1.0) as u64, limit, guessing: false });
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
        let limiter = RateLimiter::new(Cache::disabled(), RateSettings { per_second: 10.0, burst: 50, ..RateSettings::default() });
        for i in 0..50 {
            let allowance = limiter.check("t", "ip", 1_000_000).await.unwrap_or_else(|_| panic!("request {i} of the burst"));
            assert_eq!(allowance.remaining, 49 - i);
        }
        let refused = limiter.check("t", "ip", 1_000_000).await.unwrap_err();
        assert_eq!(refused, Limited { retry_after: 1, limit: 50, guessing: false });
        assert!(limiter.check("t", "ip", 1_000_100).await.is_ok(), "one more each 100 ms");
        assert!(limiter.check("other", "ip", 1_000_000).await.is_ok(), "per token");
    }

    #[test]
    fn a_client_that_misses_too_often_is_refused_until_its_window_ends_without_redis() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let limiter = RateLimiter::new(Cache::disabled(), RateSettings { misses: 3, miss_window_secs: 60, ..RateSettings::default() });
            for _ in 0..3 {
                assert!(limiter.missed("guesser", 1_000_000).await.is_ok());
            }
            assert_eq!(limiter.missed("guesser", 1_000_000).await.unwrap_err().retry_after, 60);
            assert!(limiter.check("real", "guesser", 1_001_000).await.is_err(), "a right guess is refused too");
            assert!(limiter.check("real", "someone else", 1_001_000).await.is_ok(), "per address");
            assert!(limiter.check("real", "guesser", 1_060_000).await.is_ok(), "until the window ends");
        });
    }
}
