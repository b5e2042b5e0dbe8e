//! Sign-in throttling: at most `max_login_failures` failed attempts per account and per IP address
//! in `login_window`, then 429 with `Retry-After` until the window that started with the first
//! attempt is over. An attempt is counted before its password is hashed and given back when it
//! was right, so a parallel burst cannot slip past the limit. Counts live in Redis, shared by every server process. When Redis is away the
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

    /// Reserves one attempt for this email from this address before its password is checked:
    /// both counts go up at once (Redis `INCR`), so a burst of parallel attempts cannot all pass a
    /// count read before any of them was done. Refused once either count is past the limit. A
    /// wrong password keeps its reservation (it is the failure); a right one gives it back
    /// (`succeeded`).
    pub async fn reserve(&self, email: &str, ip: &str) -> Result<(), Throttled> {
        let keys = keys(email, ip);
        let mut over = false;
        for key in &keys {
            let count = match self.cache.count_in_window(key, self.window).await {
                Ok(count) => count,
                Err(_) => self.local_count(key),
            };
            over |= count > self.max_failures;
        }
        if !over {
            return Ok(());
        }
        let left = match self.cache.window_counts(&keys).await {
            Ok(counts) => counts,
            Err(_) => self.local_counts(&keys),
        }
        .into_iter()
        .filter(|(count, _)| *count > self.max_failures)
        .map(|(_, left)| left)
        .max()
        .unwrap_or(self.window);
        Err(Throttled { retry_after: left.max(Duration::from_secs(1)) })
    }

    /// A right password: the account's failures are cleared, and the address's reservation is
    /// given back (one good account does not license guessing at others, nor count against them).
    pub async fn succeeded(&self, email: &str, ip: &str) {
        let [account, address] = keys(email, ip);
        let _ = self.cache.delete(&account).await;
        let _ = self.cache.uncount(&address).await;
        let mut local = self.local.lock().unwrap();
        local.remove(&account);
        if let Some(entry) = local.get_mut(&address) {
            entry.0 = (entry.0 - 1).max(0);
        }
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

    /// Counts one more attempt in this process's own window (Redis away); the count so far.
    fn local_count(&self, key: &str) -> i64 {
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
        entry.0
    }
}
