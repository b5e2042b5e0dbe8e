//! Sign-in throttling: at most `max_login_failures` failed attempts per account and per IP address
//! in `login_window`, then 429 with `Retry-After` until the window that started with the first
//! failure is over. Counts live in Redis, shared by every server process. When Redis is away the
//! same rule is kept per process, in memory: weaker (N processes allow N times the attempts), but
//! never none.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cache::Cache;

pub struct LoginThrottle {
    cache: Cache,
    max_failures: i64,
    window: Duration,
    local: Mutex<HashMap<String, (i64, Instant)>>,
}

/// Sign-in is closed for this account or address until `retry_after` has passed.
#[derive(Debug, Clone, Copy)]
pub struct Throttled {
    pub retry_after: Duration,
}

const LOCAL_ENTRIES: usize = 100_000;

fn keys(email: &str, ip: &str) -> [String; 2] {
    let email: String = email.trim().to_lowercase().chars().take(320).collect();
    [format!("login:account:{email}"), format!("login:ip:{ip}")]
}

impl LoginThrottle {
    pub fn new(cache: Cache, max_failures: i64, window: Duration) -> LoginThrottle {
        LoginThrottle { cache, max_failures, window, local: Mutex::new(HashMap::new()) }
    }

    /// Whether this email from this address may try a password now.
    pub async fn check(&self, email: &str, ip: &str) -> Result<(), Throttled> {
        let keys = keys(email, ip);
        let counts = match self.cache.window_counts(&keys).await {
            Ok(counts) => counts,
            Err(_) => self.local_counts(&keys),
        };
        let closed = counts.into_iter().filter(|(count, _)| *count >= self.max_failures).map(|(_, left)| left).max();
        match closed {
            Some(left) => Err(Throttled { retry_after: left.max(Duration::from_secs(1)) }),
            None => Ok(()),
        }
    }

    pub async fn failed(&self, email: &str, ip: &str) {
        for key in keys(email, ip) {
            if self.cache.count_in_window(&key, self.window).await.is_err() {
                self.local_count(&key);
            }
        }
    }

    /// A right password clears the account's failures (not the address's: one good account does
    /// not license guessing at others).
    pub async fn succeeded(&self, email: &str, ip: &str) {
        let [account, _] = keys(email, ip);
        let _ = self.cache.delete(&account).await;
        self.local.lock().unwrap().remove(&account);
    }

    fn local_counts(&self, keys: &[String]) -> Vec<(i64, Duration)> {
        let now = Instant::now();
        let local = self.local.lock().unwrap();
        keys.iter()
            .map(|k| match local.get(k) {
                Some((count, ends)) if *ends > now => (*count, *ends - now),
                _ => (0, Duration::ZERO),
            })
            .collect()
    }

    fn local_count(&self, key: &str) {
        let now = Instant::now();
        let mut local = self.local.lock().unwrap();
        if local.len() >= LOCAL_ENTRIES {
            local.retain(|_, (_, ends)| *ends > now);
        }
        let entry = local.entry(key.to_string()).or_insert((0, now + self.window));
        if entry.1 <= now {
            *entry = (0, now + self.window);
        }
        entry.0 += 1;
    }
}
