//! Who may do what with an application. Its token is a capability: whoever holds it may read and
//! post chats and messages (the challenge's clients know nothing else). The application also has
//! an owner — the signed-in user or API bearer token's user who made it — who alone sees it in
//! the list and may rename it; one made anonymously has no owner, and its token (shown once, in
//! the creator's answer) is all there is.
//!
//! A token that names no application counts as a miss against the client's address (see
//! `limits`), so tokens cannot be guessed at speed, and a miss writes nothing keyed by the token.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::HttpRequest;

use super::domain::Token;
use super::limits::Allowance;
use super::repo::{self, Application};
use super::{run, ChatError, ChatState};
use crate::web::{Bearer, Db, Viewer};

/// The user a request speaks for: its bearer token's (which must then be valid), else its
/// session's; `None` for an anonymous caller.
pub async fn caller(req: &HttpRequest) -> Result<Option<i64>, ChatError> {
    match crate::web::bearer(req).await {
        Bearer::User(id) => Ok(Some(id)),
        Bearer::Refused { message, .. } => Err(ChatError::Unauthenticated(message)),
        Bearer::Absent => Ok(Viewer::of(req).map(|v| v.id)),
    }
}

/// Applications' ids by token, remembered by this process after the first lookup (tokens never
/// change hands and applications are never deleted): local by design, as it only saves a query.
#[derive(Default)]
pub struct KnownApplications(Mutex<HashMap<String, i64>>);

impl KnownApplications {
    fn get(&self, token: &Token) -> Option<i64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(token.as_str()).copied()
    }

    fn remember(&self, token: &Token, id: i64) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= 100_000 {
            known.clear(); // a bound, not a policy: the next lookups fill it again
        }
        known.insert(token.as_str().to_string(), id);
    }
}

impl ChatState {
    /// The id of the application `token` names. A token that names none is a miss for `client`:
    /// 404, or 429 once the client has missed too often.
    pub async fn find(&self, db: &Db, token: &Token, client: &str) -> Result<i64, ChatError> {
        if let Some(id) = self.known.get(token) {
            return Ok(id);
        }
        let lookup = token.clone();
        match run(db, move |conn| Ok(repo::application_id(conn, &lookup)?)).await? {
            Some(id) => {
                self.known.remember(token, id);
                Ok(id)
            }
            None => Err(self.missed(client).await),
        }
    }

    /// The application itself (always read, for its counts), as `find` judges the token.
    pub async fn application(&self, db: &Db, token: &Token, client: &str) -> Result<Application, ChatError> {
        let lookup = token.clone();
        match run(db, move |conn| Ok(repo::application(conn, &lookup)?)).await? {
            Some(app) => Ok(app),
            None => Err(self.missed(client).await),
        }
    }

    /// `find`, then the request counted against the token's rate limit.
    pub async fn admit(&self, db: &Db, token: &Token, client: &str) -> Result<(i64, Allowance), ChatError> {
        let id = self.find(db, token, client).await?;
        Ok((id, self.limited(token, client).await?))
    }

    async fn missed(&self, client: &str) -> ChatError {
        match self.limiter.missed(client, self.clock.now().timestamp_millis()).await {
            Ok(()) => ChatError::NotFound("application"),
            Err(limited) => ChatError::Limited(limited),
        }
    }
}

/// Renaming is the owner's; an application made anonymously is its token holder's.
pub fn may_rename(app: &Application, caller: Option<i64>) -> Result<(), ChatError> {
    match app.owner_id {
        Some(owner) if caller != Some(owner) => {
            Err(ChatError::Forbidden("only the application's owner may rename it: sign in as them, or send their API bearer token".into()))
        }
        _ => Ok(()),
    }
}
