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

use actix_session::SessionExt;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage};
use blake2::{Blake2s256, Digest};
use chrono::{DateTime, Utc};
use rand::RngCore;
use std::time::Duration;

use super::{repo, SessionUser, Visitor};
use crate::cache::Cache;
use crate::db::{CountedConn, PgPool, QueryCounter};
use crate::web::AppState;

/// The session cookie's entry that holds the token.
pub const TOKEN: &str = "sid";

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

pub struct SessionStore {
    cache: Cache,
    ttl: Duration,
    cache_ttl: Duration,
}

impl SessionStore {
    pub fn new(cache: Cache, ttl: Duration, cache_ttl: Duration) -> SessionStore {
        SessionStore { cache, ttl, cache_ttl }
    }

    pub fn expires_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::days(7))
    }

    /// Who holds this token, from Redis or else from the database. `Err` when neither could say.
    async fn user(&self, hash: Vec<u8>, pool: PgPool, counter: QueryCounter, now: DateTime<Utc>) -> Result<Option<SessionUser>, String> {
        let key = cache_key(&hash);
        if let Ok(Some(raw)) = self.cache.get(&key).await {
            if let Ok(user) = serde_json::from_str::<SessionUser>(&raw) {
                return Ok(Some(user));
            }
        }
        let found = web::block(move || {
            let mut conn = CountedConn::checkout(&pool, &counter).map_err(|e| e.to_string())?;
            repo::session_user(&mut conn, &hash, now).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        let user = found.map(|u| SessionUser { id: u.id, name: u.name, email: u.email, is_admin: u.is_admin });
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

/// Middleware: establishes who is signed in (a `Visitor` in the request's extensions) before
/// any handler runs. A token whose session is revoked or expired is dropped from the cookie.
pub async fn identify(req: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let session = req.get_session();
    let token = session.get::<String>(TOKEN).ok().flatten();
    let visitor = match (token, req.app_data::<web::Data<AppState>>()) {
        (Some(token), Some(state)) => {
            let services = &state.services;
            let counter = req.extensions().get::<QueryCounter>().cloned().unwrap_or_default();
            let now = services.clock.now();
            match services.sessions.user(token_hash(&token), services.pool.clone(), counter, now).await {
                Ok(Some(user)) => Some(user),
                Ok(None) => {
                    session.remove(TOKEN);
                    None
                }
                Err(why) => {
                    // The database did not answer: treat the visitor as anonymous for this
                    // request, but keep the token for when it is back.
                    log::warn!("could not read the session: {why}");
                    None
                }
            }
        }
        _ => None,
    };
    req.extensions_mut().insert(Visitor(visitor));
    next.call(req).await
}

pub const PRUNE_SESSIONS: &str = "prune_sessions";

/// Forgets sessions that ended (revoked or expired) more than a day ago.
pub struct PruneSessions {
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
}

impl crate::jobs::JobHandler for PruneSessions {
    fn kind(&self) -> &'static str {
        PRUNE_SESSIONS
    }

    fn perform(&self, conn: &mut diesel::PgConnection, _: &crate::jobs::Job) -> Result<(), crate::jobs::JobError> {
        repo::prune_sessions(conn, self.clock.now() - chrono::Duration::days(1))?;
        Ok(())
    }
}
