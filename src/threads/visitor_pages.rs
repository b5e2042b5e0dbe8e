//! The thread pages visitors get, kept whole and compressed in this process. A visitor's page is
//! the same for every visitor, so it is rendered and compressed once per version of the post
//! (`ThreadCache`'s version in Redis, read before anything else as for any page) instead of on
//! every request. Per process by design: each server fills its own after a post changes, and a
//! lost copy costs one render. (README, "Past one machine", lists it.)

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::web::caching::Precompressed;

/// Pages kept at most, about 100 KiB each with its encodings: past this the map starts over.
const KEPT: usize = 128;

#[derive(Default)]
pub struct VisitorPages {
    /// By page cache key: the version the page was made under, and the page.
    pages: RwLock<HashMap<String, (String, Arc<Precompressed>)>>,
}

impl VisitorPages {
    /// The page at `key`, if it was made under `version`.
    pub fn get(&self, key: &str, version: &str) -> Option<Arc<Precompressed>> {
        let pages = self.pages.read().unwrap_or_else(|p| p.into_inner());
        pages.get(key).filter(|(made_under, _)| made_under == version).map(|(_, page)| page.clone())
    }

    pub fn keep(&self, key: String, version: String, page: Arc<Precompressed>) {
        let mut pages = self.pages.write().unwrap_or_else(|p| p.into_inner());
        if pages.len() >= KEPT && !pages.contains_key(&key) {
            pages.clear();
        }
        pages.insert(key, (version, page));
    }
}
