//! Server-side sessions. The (encrypted) session cookie carries a random token; PostgreSQL holds
//! the token's hash, whose user, and whether it was revoked. Signing out revokes the row, so a
//! copied cookie is worth nothing afterwards, wherever it went; "sign out everywhere" revokes
//! every row of the user.
//!
//! Reading the row on every request would cost every page a query, so who a token belongs to is
//! kept in Redis for `session_cache_ttl` (30 s) and dropped from it at sign-out: revocation takes
//! effect at once while Redis works, and within 30 s if Redis missed the drop. With Redis down,
//! each signed-in request reads the row (slower, never wrong). Roles shown in the page frame may
//! be those 30 s old; pages that need a role (`AdminUser`) read it from the database.

use actix_web::web;
use blake2::{Blake2s256, Digest};
use chrono::{DateTime, Utc};
use rand::RngCore;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::{repo, SessionUser};
use crate::cache::Cache;
use crate::clock::Clock;
use crate::db::{CountedConn, PgPool, QueryCounter};
use crate::web::{Identify, Identity};

/// The session cookie's entry that holds the token.
pub use crate::web::SESSION_TOKEN as TOKEN;

pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the database keeps of a token: a table dump signs nobody in.
pub fn token_hash(token: &str) -> Vec<u8> {
    Blake2s256::digest(token.as_bytes()).to_vec()
}

fn cache_key(hash: &[u8]) -> String {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("session:{hex}")
}

#[derive(Clone)]
pub struct SessionStore {
    cache: Cache,
    pool: PgPool,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    cache_ttl: Duration,
}

impl SessionStore {
    pub fn new(cache: Cache, pool: PgPool, clock: Arc<dyn Clock>, ttl: Duration, cache_ttl: Duration) -> SessionStore {
        SessionStore { cache, pool, clock, ttl, cache_ttl }
    }

    pub fn expires_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::days(7))
    }

    /// Who holds this token, from Redis or else from the database. `Err` when neither could say.
    async fn user(&self, hash: Vec<u8>, pool: PgPool, counter: QueryCounter, now: DateTime<Utc>) -> Result<Option<SessionUser>, String> {
        let key = cache_key(&hash);
        let cached = self.cache.get(&key).await;
        if let Ok(Some(raw)) = &cached {
            if let Ok(user) = serde_json::from_str::<SessionUser>(raw) {
                crate::metrics::metrics().session_reads.with_label_values(&["cache"]).inc();
                return Ok(Some(user));
            }
        }
        let from = match cached {
            Ok(_) | Err(crate::cache::CacheError::NotConfigured) => "database",
            Err(_) => "database_redis_failed",
        };
        crate::metrics::metrics().session_reads.with_label_values(&[from]).inc();
        let found = web::block(move || {
            let mut conn = CountedConn::checkout(&pool, &counter).map_err(|e| e.to_string())?;
            repo::session_user(&mut conn, &hash, now).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        let user = found.map(|(u, is_staff)| SessionUser { id: u.id, name: u.name, email: u.email, is_admin: u.is_admin, is_staff });
        if let Some(user) = &user {
            self.remember(&key, user).await;
        }
        Ok(user)
    }

    async fn remember(&self, key: &str, user: &SessionUser) {
        if let Ok(raw) = serde_json::to_string(user) {
            let _ = self.cache.set(key, &raw, self.cache_ttl).await;
        }
    }

    /// After the session row was written: the next request needs no query to know its user.
    pub async fn started(&self, token: &str, user: &SessionUser) {
        self.remember(&cache_key(&token_hash(token)), user).await;
    }

    /// After the rows of these tokens were revoked.
    pub async fn ended(&self, hashes: &[Vec<u8>]) {
        let keys: Vec<String> = hashes.iter().map(|h| cache_key(h)).collect();
        if let Err(e) = self.cache.delete_many(&keys).await {
            log::warn!("revoked sessions stay in the cache until it expires them ({:?}): {e}", self.cache_ttl);
        }
    }
}

/// The HTTP layer asks, before every handler, who holds the request's token.
impl Identify for SessionStore {
    fn identify(&self, token: String, counter: QueryCounter) -> Pin<Box<dyn Future<Output = Identity>>> {
        let (store, pool, now) = (self.clone(), self.pool.clone(), self.clock.now());
        Box::pin(async move {
            match store.user(token_hash(&token), pool, counter, now).await {
                Ok(Some(user)) => Identity::Known(user),
                Ok(None) => Identity::Unknown,
                Err(why) => Identity::Unavailable(why),
            }
        })
    }
}

