//! Creating a chat or a message, whichever way creates are numbered right now: through Redis while
//! the epoch holds (the token's rate limit counted in the same call), in PostgreSQL while Redis is
//! away and every server has drained, 503 in between — or, without an intake
//! (`CHAT_INTAKE=postgres`), always in PostgreSQL. The API and the chat pages both create here.

use chrono::{DateTime, Utc};
use diesel::PgConnection;
use std::sync::Arc;

use super::domain::{FieldErrors, Item, MessageBody, Token};
use super::intake::{ChatIntake, Refused, Route};
use super::limits::Allowance;
use super::{repo, run, ChatError, ChatState};
use crate::web::Db;

/// What to create: the application's next chat, or a chat's next message (its body as parsed:
/// a body that cannot be taken is refused only once the chat is known to exist).
#[derive(Debug, Clone)]
pub enum Create {
    Chat,
    Message { chat: i32, body: Result<MessageBody, FieldErrors> },
}

impl Create {
    fn noun(&self) -> &'static str {
        match self {
            Create::Chat => "chat",
            Create::Message { .. } => "message",
        }
    }
}

/// Creates it for the application `token` names, counted against the token's rate limit (and
/// a token that names none against `client`'s misses): its number.
pub async fn create(state: &ChatState, db: &Db, token: Token, client: &str, what: Create) -> Result<(i32, Allowance), ChatError> {
    let app = state.find(db, &token, client).await?;
    match &state.intake {
        Some(intake) => intake.create(state, db, app, &token, client, &what).await,
        None => {
            let allowance = state.limited(&token, client).await?;
            let now = state.clock.now();
            Ok((run(db, move |conn| make(conn, &token, &what, now)).await?, allowance))
        }
    }
}

/// The chat's id, or which of application and chat is missing.
pub fn chat_id(conn: &mut PgConnection, token: &Token, number: i32) -> Result<i64, ChatError> {
    if let Some(id) = repo::chat_id(conn, token, number)? {
        return Ok(id);
    }
    repo::application_id(conn, token)?.ok_or(ChatError::NotFound("application"))?;
    Err(ChatError::NotFound("chat"))
}

/// Makes it in PostgreSQL, numbered there.
fn make(conn: &mut PgConnection, token: &Token, what: &Create, now: DateTime<Utc>) -> Result<i32, ChatError> {
    match what {
        Create::Chat => Ok(repo::create_chat(conn, token, now)?.ok_or(ChatError::NotFound("application"))?.number),
        Create::Message { chat, body } => {
            chat_id(conn, token, *chat)?;
            let body = body.clone().map_err(ChatError::Invalid)?;
            Ok(repo::create_message(conn, token, *chat, &body, now)?.ok_or(ChatError::NotFound("chat"))?.number)
        }
    }
}

impl ChatIntake {
    /// Creates it through the intake. The phase may change under a request, so the route is
    /// asked twice before the answer is 503.
    pub async fn create(self: &Arc<Self>, state: &ChatState, db: &Db, app: i64, token: &Token, client: &str, what: &Create) -> Result<(i32, Allowance), ChatError> {
        for _ in 0..2 {
            match self.route() {
                Route::Redis(epoch) => {
                    let item = match what {
                        Create::Chat => Item::Chat { app, number: 0 },
                        Create::Message { chat, body } => {
                            let body = body.clone().map_err(ChatError::Invalid)?;
                            Item::Message { app, chat: *chat, number: 0, body: body.as_str().to_string() }
                        }
                    };
                    let cell = state.rate_cell(token, client);
                    // A chat's application is known (above). A message's chat exists if its
                    // number was issued in this epoch (checked in the same Lua call), or
                    // PostgreSQL has it (with no counter yet in this epoch, PostgreSQL has every
                    // chat there is).
                    let (mut known, mut floor) = (matches!(what, Create::Chat), None);
                    let accepted = loop {
                        match self.accept(&epoch, item.clone(), floor, known, &cell).await {
                            Ok(accepted) => break Some(accepted),
                            Err(Refused::Limited(tat)) => return Err(state.allowance(&cell, false, tat).unwrap_err()),
                            Err(Refused::Guessing(wait_ms)) => return Err(ChatError::Limited(state.limiter.guessing(wait_ms))),
                            Err(Refused::AskPostgres) => {
                                let Create::Message { chat, .. } = *what else { break None };
                                let lookup = token.clone();
                                if run(db, move |conn| Ok(repo::chat(conn, &lookup, chat)?)).await?.is_none() {
                                    return Err(ChatError::NotFound("chat"));
                                }
                                known = true;
                            }
                            Err(Refused::NoSuchChat) => return Err(ChatError::NotFound("chat")),
                            // Asking again could number the same request twice.
                            Err(Refused::Unanswered) => {
                                return Err(ChatError::Unavailable(format!(
                                    "no answer in time: the {} may have been created; list them before sending it again",
                                    what.noun()
                                )))
                            }
                            Err(Refused::NeedFloor) if floor.is_none() => {
                                let what = what.clone();
                                floor = Some(
                                    run(db, move |conn| match what {
                                        Create::Chat => Ok(repo::highest_chat(conn, app)?),
                                        Create::Message { chat, .. } => Ok(repo::highest_message(conn, app, chat)?),
                                    })
                                    .await?,
                                );
                            }
                            Err(_) => break None,
                        }
                    };
                    if let Some((number, tat)) = accepted {
                        return Ok((number, state.allowance(&cell, true, tat)?));
                    }
                }
                Route::Postgres => {
                    let allowance = state.limited(token, client).await?;
                    let (intake, token, what, now) = (self.clone(), token.clone(), what.clone(), state.clock.now());
                    if let Some(number) = run(db, move |conn| intake.synchronously(|| make(conn, &token, &what, now)).transpose()).await? {
                        return Ok((number, allowance));
                    }
                }
                Route::Wait => break,
            }
        }
        Err(ChatError::Unavailable(format!("{}s are being recovered after Redis lost its state", what.noun())))
    }
}
