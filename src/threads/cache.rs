//! The thread cache in Redis: one version per post, pages under that version, fragments under
//! their Russian-doll keys, and the metrics that show how well it works.
//!
//! Why a warm page is never stale: the post's version is read *before* the database is, and
//! every write bumps it *after* its transaction commits, to a random value that was never used.
//! A page stored under version V therefore holds data at least as new as V. If the version key is
//! lost (evicted, expired, Redis restarted) a new random one is drawn, which no page is stored
//! under: the next load is a miss, never an old page.

use rand::RngCore;
use serde::Serialize;
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::cache::Cache;

const VERSION_TTL: Duration = Duration::from_secs(24 * 3600);
const PAGE_TTL: Duration = Duration::from_secs(3600);
const FRAGMENT_TTL: Duration = Duration::from_secs(24 * 3600);
const VOTES_TTL: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub struct FragmentMetrics {
    pub fragment_hits: AtomicU64,
    pub fragment_misses: AtomicU64,
    pub fragments_rendered: AtomicU64,
    pub page_hits: AtomicU64,
    pub page_misses: AtomicU64,
    pub invalidations: AtomicU64,
    recent: Mutex<VecDeque<i64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricsSnapshot {
    pub fragment_hits: u64,
    pub fragment_misses: u64,
    pub fragments_rendered: u64,
    pub page_hits: u64,
    pub page_misses: u64,
    pub invalidations: u64,
    pub fragment_hit_ratio: Option<f64>,
}

impl FragmentMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (hits, misses) = (get(&self.fragment_hits), get(&self.fragment_misses));
        MetricsSnapshot {
            fragment_hits: hits,
            fragment_misses: misses,
            fragments_rendered: get(&self.fragments_rendered),
            page_hits: get(&self.page_hits),
            page_misses: get(&self.page_misses),
            invalidations: get(&self.invalidations),
            fragment_hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
        }
    }

    pub fn record_render(&self, rendered: &[i64], hits: usize) {
        self.fragment_hits.fetch_add(hits as u64, Ordering::Relaxed);
        self.fragment_misses.fetch_add(rendered.len() as u64, Ordering::Relaxed);
        self.fragments_rendered.fetch_add(rendered.len() as u64, Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap();
        for id in rendered {
            if recent.len() == 1000 {
                recent.pop_front();
            }
            recent.push_back(*id);
        }
    }

    /// The comments rendered since the last call (at most the last thousand).
    pub fn take_rendered(&self) -> Vec<i64> {
        self.recent.lock().unwrap().drain(..).collect()
    }
}

pub struct Lookup {
    pub version: Option<String>,
    pub page: Option<String>,
    /// The version did not exist and this lookup created it.
    pub fresh: bool,
}

pub struct ThreadCache {
    cache: Cache,
    pub metrics: FragmentMetrics,
    /// Visitors' pages, whole and compressed, in this process.
    pub visitor_pages: super::visitor_pages::VisitorPages,
    /// Posts whose version could not be bumped (Redis was away): bumped as soon as it is back.
    pending: Mutex<BTreeSet<i64>>,
}

fn fresh_version() -> String {
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn version_key(post_id: i64) -> String {
    format!("post:{post_id}:ver")
}

impl ThreadCache {
    pub fn new(cache: Cache) -> ThreadCache {
        ThreadCache { cache, metrics: FragmentMetrics::default(), visitor_pages: Default::default(), pending: Mutex::new(BTreeSet::new()) }
    }

    /// The post's current version and, if one is filed under it, the cached page at `page_key`:
    /// one round trip. The version is created if the post has none (`Lookup::fresh`); no version
    /// when Redis is away. A page filed under any other version is a miss.
    pub async fn lookup(&self, post_id: i64, page_key: &str) -> Lookup {
        self.flush_pending().await;
        let away = Lookup { version: None, page: None, fresh: false };
        let Ok(mut found) = self.cache.get_many(&[version_key(post_id), page_key.to_string()]).await else {
            return away;
        };
        let page = found.pop().flatten();
        let (version, fresh) = match found.pop().flatten() {
            Some(v) => (v, false),
            None => match self.cache.set_if_absent(&version_key(post_id), &fresh_version(), VERSION_TTL).await {
                Ok(v) => (v, true),
                Err(_) => return away,
            },
        };
        let page = page.and_then(|p| p.strip_prefix(&format!("{version}\u{1}")).map(str::to_string));
        let counter = if page.is_some() { &self.metrics.page_hits } else { &self.metrics.page_misses };
        counter.fetch_add(1, Ordering::Relaxed);
        Lookup { version: Some(version), page, fresh }
    }

    /// The post's version, if Redis has one (creating one is `lookup`'s part): enough to know
    /// whether a visitor's page kept in this process is current.
    pub async fn current_version(&self, post_id: i64) -> Option<String> {
        self.flush_pending().await;
        self.cache.get(&version_key(post_id)).await.ok().flatten()
    }

    /// Takes back a version this request created for a post that turned out not to exist, so that
    /// asking for made-up posts leaves nothing behind in Redis.
    pub async fn forget_version(&self, post_id: i64) {
        let _ = self.cache.delete(&version_key(post_id)).await;
    }

    /// After a write to the post has committed: every page of it is from now on a miss.
    pub async fn bump(&self, post_id: i64) {
        self.metrics.invalidations.fetch_add(1, Ordering::Relaxed);
        if self.cache.set(&version_key(post_id), &fresh_version(), VERSION_TTL).await.is_err() {
            self.pending.lock().unwrap().insert(post_id);
        }
    }

    /// `bump` for worker threads, for many posts at once.
    pub fn bump_blocking(&self, post_ids: &[i64]) {
        self.metrics.invalidations.fetch_add(post_ids.len() as u64, Ordering::Relaxed);
        let entries: Vec<(String, String)> = post_ids.iter().map(|id| (version_key(*id), fresh_version())).collect();
        if self.cache.set_many_blocking(&entries, VERSION_TTL).is_err() {
            self.pending.lock().unwrap().extend(post_ids);
        }
    }

    async fn flush_pending(&self) {
        let pending: Vec<i64> = std::mem::take(&mut *self.pending.lock().unwrap()).into_iter().collect();
        for post_id in pending {
            if self.cache.set(&version_key(post_id), &fresh_version(), VERSION_TTL).await.is_err() {
                self.pending.lock().unwrap().insert(post_id);
            }
        }
    }

    /// Files the page under the version that was read before its data was loaded.
    pub async fn store_page(&self, key: &str, version: &str, html: &str) {
        let _ = self.cache.set(key, &format!("{version}\u{1}{html}"), PAGE_TTL).await;
    }

    /// The cached fragments for `keys`, or all misses when Redis is away.
    pub async fn fragments(&self, keys: &[String]) -> Vec<Option<String>> {
        match self.cache.get_many(keys).await {
            Ok(found) => found,
            Err(_) => vec![None; keys.len()],
        }
    }

    pub async fn store_fragments(&self, fresh: &[(String, String)]) {
        let _ = self.cache.set_many(fresh, FRAGMENT_TTL).await;
    }

    /// The comments of this post the user upvoted, if cached.
    pub async fn votes(&self, post_id: i64, user_id: i64) -> Option<Vec<i64>> {
        let raw = self.cache.get(&format!("votes:{post_id}:{user_id}")).await.ok().flatten()?;
        serde_json::from_str(&raw).ok()
    }

    pub async fn store_votes(&self, post_id: i64, user_id: i64, votes: &[i64]) {
        let raw = serde_json::to_string(votes).unwrap_or_default();
        let _ = self.cache.set(&format!("votes:{post_id}:{user_id}"), &raw, VOTES_TTL).await;
    }

    pub async fn forget_votes(&self, post_id: i64, user_id: i64) {
        let _ = self.cache.delete(&format!("votes:{post_id}:{user_id}")).await;
    }
}
