//! The chat API's handlers, mounted twice: under `/chat_applications` and its alias
//! `/applications` (same handlers, same data).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::domain::{self, SearchTerm, Token};
use super::repo::{self, Application, Chat, Message};
use super::intake::{ChatIntake, Item, Refused, Route as IntakeRoute};
use super::limits::{Allowance, RateCell};
use std::sync::Arc;
use super::{ChatError, ChatState};
use crate::web::Db;

type State = web::Data<ChatState>;

impl ChatIntake {
    /// The application's id for a token, remembered by this server after the first lookup
    /// (tokens never change hands and applications are never deleted).
    pub async fn application(&self, db: &Db, token: &Token) -> Result<i64, ChatError> {
        if let Some(id) = self.known_application(token.as_str()) {
            return Ok(id);
        }
        let lookup = token.clone();
        let id = run(db, move |conn| repo::application_id(conn, &lookup)?.ok_or(ChatError::NotFound("application"))).await?;
        self.remember_application(token.as_str(), id);
        Ok(id)
    }
}

/// Counts the request against the token's rate limit (429 when it is spent).
async fn limited(state: &ChatState, token: &Token) -> Result<Allowance, ChatError> {
    state.limiter.check(token.as_str(), state.clock.now().timestamp_millis()).await.map_err(ChatError::Limited)
}

/// The `RateLimit-*` headers (IETF draft) on an answer.
fn with_limits(mut response: HttpResponse, allowance: Allowance) -> HttpResponse {
    let headers = response.headers_mut();
    for (name, value) in [("ratelimit-limit", allowance.limit as u64), ("ratelimit-remaining", allowance.remaining as u64), ("ratelimit-reset", allowance.reset)] {
        headers.insert(actix_web::http::header::HeaderName::from_static(name), actix_web::http::header::HeaderValue::from(value));
    }
    response
}

pub const MAX_BODY: usize = 64 * 1024;
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1_000;

fn app_json(app: &Application) -> Value {
    json!({ "name": app.name, "token": app.token, "chats_count": app.chats_count })
}

/// The body as JSON: malformed or missing → 400, over the limit → 413.
async fn json_body(mut payload: web::Payload) -> Result<Value, ChatError> {
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ChatError::BadRequest(format!("the body could not be read: {e}")))?;
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(ChatError::TooLarge(MAX_BODY));
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ChatError::BadRequest("a JSON body is required".into()));
    }
    serde_json::from_slice(&bytes).map_err(|e| ChatError::BadRequest(format!("the body is not valid JSON: {e}")))
}

async fn run<T: Send + 'static>(
    db: &Db,
    work: impl FnOnce(&mut diesel::PgConnection) -> Result<T, ChatError> + Send + 'static,
) -> Result<T, ChatError> {
    db.run(move |conn| Ok::<_, crate::web::AppError>(work(conn))).await.map_err(ChatError::from)?
}

fn chat_json(chat: &Chat) -> Value {
    json!({ "number": chat.number, "messages_count": chat.messages_count })
}

fn message_json(message: &Message) -> Value {
    json!({ "number": message.number, "body": message.body })
}

/// `page` + `per_page`, or `after` + `limit`: a page of 100 by default, at most 1,000.
pub struct Page {
    pub after: Option<String>,
    pub offset: i64,
    pub limit: i64,
}

pub fn page(req: &HttpRequest) -> Result<Page, ChatError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let get = |name: &str| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let number = |name: &str, min: i64| -> Result<Option<i64>, ChatError> {
        match get(name) {
            None | Some("") => Ok(None),
            Some(raw) => raw.parse::<i64>().ok().filter(|n| *n >= min).map(Some).ok_or_else(|| ChatError::BadRequest(format!("{name} must be a whole number of at least {min}"))),
        }
    };
    let size = number("per_page", 1)?.or(number("limit", 1)?).unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
    let page = number("page", 1)?.unwrap_or(1);
    Ok(Page { after: get("after").filter(|a| !a.is_empty()).map(str::to_string), offset: (page - 1).saturating_mul(size), limit: size })
}

async fn create_application(db: Db, payload: web::Payload) -> Result<HttpResponse, ChatError> {
    let name = domain::app_name(&json_body(payload).await?).map_err(ChatError::Invalid)?;
    let app = run(&db, move |conn| Ok(repo::create_application(conn, &name)?)).await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(app_json(&app)))
}

async fn list_applications(req: HttpRequest, db: Db) -> Result<HttpResponse, ChatError> {
    let page = page(&req)?;
    let after = match &page.after {
        Some(raw) => Some(Token::parse(raw).ok_or(ChatError::NotFound("application"))?),
        None => None,
    };
    let apps = run(&db, move |conn| repo::applications_page(conn, after.as_ref(), page.offset, page.limit)?.ok_or(ChatError::NotFound("application"))).await?;
    Ok(HttpResponse::Ok().json(apps.iter().map(app_json).collect::<Vec<_>>()))
}

async fn show_application(state: State, db: Db, path: web::Path<String>) -> Result<HttpResponse, ChatError> {
    let token = Token::parse(&path).ok_or(ChatError::NotFound("application"))?;
    let allowance = limited(&state, &token).await?;
    let app = run(&db, move |conn| repo::application(conn, &token)?.ok_or(ChatError::NotFound("application"))).await?;
    Ok(with_limits(HttpResponse::Ok().json(app_json(&app)), allowance))
}

async fn update_application(state: State, db: Db, path: web::Path<String>, payload: web::Payload) -> Result<HttpResponse, ChatError> {
    let token = Token::parse(&path).ok_or(ChatError::NotFound("application"))?;
    let allowance = limited(&state, &token).await?;
    let body = json_body(payload).await?;
    let now = state.clock.now();
    let app = run(&db, move |conn| {
        // An unknown token is 404 before the body is judged (the challenge's order).
        repo::application(conn, &token)?.ok_or(ChatError::NotFound("application"))?;
        let name = domain::app_name(&body).map_err(ChatError::Invalid)?;
        repo::rename_application(conn, &token, &name, now)?.ok_or(ChatError::NotFound("application"))
    })
    .await?;
    Ok(with_limits(HttpResponse::Ok().json(app_json(&app)), allowance))
}

/// Where a page of numbered things starts: after a number (`after`), or after the pages before.
fn after_number(page: &Page) -> Result<i32, ChatError> {
    match &page.after {
        Some(raw) => raw.parse::<i32>().ok().filter(|n| *n >= 0).ok_or_else(|| ChatError::BadRequest("after must be a number".into())),
        None => Ok(i32::try_from(page.offset).unwrap_or(i32::MAX)),
    }
}

fn token_of(raw: &str) -> Result<Token, ChatError> {
    Token::parse(raw).ok_or(ChatError::NotFound("application"))
}

fn number_of(raw: &str, what: &'static str) -> Result<i32, ChatError> {
    domain::number(raw).ok_or(ChatError::NotFound(what))
}

async fn create_chat(state: State, db: Db, path: web::Path<String>) -> Result<HttpResponse, ChatError> {
    let token = token_of(&path)?;
    let (number, allowance) = match &state.intake {
        Some(intake) => create_chat_through(&state, intake.clone(), &db, token).await?,
        None => {
            let allowance = limited(&state, &token).await?;
            (synchronous_chat(&db, token, state.clock.now()).await?, allowance)
        }
    };
    Ok(with_limits(HttpResponse::build(StatusCode::CREATED).json(json!({ "number": number, "messages_count": 0 })), allowance))
}

/// The token's rate cell for an accept, and what the accept's answer means for the limit.
fn rate_cell(state: &ChatState, token: &Token) -> RateCell {
    state.limiter.cell(token.as_str(), state.clock.now().timestamp_millis())
}

fn allowance_of(state: &ChatState, cell: &RateCell, allowed: bool, tat: f64) -> Result<Allowance, ChatError> {
    state.limiter.verdict(allowed, tat, cell.now_ms as f64).map_err(ChatError::Limited)
}

async fn synchronous_chat(db: &Db, token: Token, now: chrono::DateTime<chrono::Utc>) -> Result<i32, ChatError> {
    run(db, move |conn| Ok(repo::create_chat(conn, &token, now)?.ok_or(ChatError::NotFound("application"))?.number)).await
}

/// A chat through the intake: Redis while the epoch holds (the rate limit counted in the same
/// call), PostgreSQL while Redis is away and every server has drained, 503 in between.
async fn create_chat_through(state: &ChatState, intake: Arc<ChatIntake>, db: &Db, token: Token) -> Result<(i32, Allowance), ChatError> {
    let app = intake.application(db, &token).await?;
    for _ in 0..2 {
        match intake.route() {
            IntakeRoute::Redis(epoch) => {
                let cell = rate_cell(state, &token);
                let mut floor = None;
                let accepted = loop {
                    match intake.accept(&epoch, Item::Chat { app, number: 0 }, floor, true, &cell).await {
                        Ok(accepted) => break Some(accepted),
                        Err(Refused::Limited(tat)) => return Err(allowance_of(state, &cell, false, tat).unwrap_err()),
                        Err(Refused::NeedFloor) if floor.is_none() => {
                            floor = Some(run(db, move |conn| Ok(repo::highest_chat(conn, app)?)).await?);
                        }
                        Err(_) => break None,
                    }
                };
                if let Some((number, tat)) = accepted {
                    return Ok((number, allowance_of(state, &cell, true, tat)?));
                }
            }
            IntakeRoute::Postgres => {
                let allowance = limited(state, &token).await?;
                let (intake, token) = (intake.clone(), token.clone());
                let now = state.clock.now();
                let made = run(db, move |conn| Ok(intake.synchronously(|| repo::create_chat(conn, &token, now)).transpose()?)).await?;
                if let Some(chat) = made.flatten() {
                    return Ok((chat.number, allowance));
                }
            }
            IntakeRoute::Wait => break,
        }
    }
    Err(ChatError::Unavailable("chats are being recovered after Redis lost its state".into()))
}

async fn list_chats(state: State, req: HttpRequest, db: Db, path: web::Path<String>) -> Result<HttpResponse, ChatError> {
    let token = token_of(&path)?;
    let allowance = limited(&state, &token).await?;
    let page = page(&req)?;
    let after = after_number(&page)?;
    let chats = run(&db, move |conn| {
        let app = repo::application_id(conn, &token)?.ok_or(ChatError::NotFound("application"))?;
        Ok(repo::chats_page(conn, app, after, page.limit)?)
    })
    .await?;
    Ok(with_limits(HttpResponse::Ok().json(chats.iter().map(chat_json).collect::<Vec<_>>()), allowance))
}

async fn show_chat(state: State, db: Db, path: web::Path<(String, String)>) -> Result<HttpResponse, ChatError> {
    let (token, number) = (token_of(&path.0)?, number_of(&path.1, "chat")?);
    let allowance = limited(&state, &token).await?;
    let chat = run(&db, move |conn| {
        repo::application_id(conn, &token)?.ok_or(ChatError::NotFound("application"))?;
        repo::chat(conn, &token, number)?.ok_or(ChatError::NotFound("chat"))
    })
    .await?;
    Ok(with_limits(HttpResponse::Ok().json(chat_json(&chat)), allowance))
}

/// The chat's id, or which of application and chat is missing.
fn chat_id(conn: &mut diesel::PgConnection, token: &Token, number: i32) -> Result<i64, ChatError> {
    if let Some(id) = repo::chat_id(conn, token, number)? {
        return Ok(id);
    }
    repo::application_id(conn, token)?.ok_or(ChatError::NotFound("application"))?;
    Err(ChatError::NotFound("chat"))
}

async fn create_message(state: State, db: Db, path: web::Path<(String, String)>, payload: web::Payload) -> Result<HttpResponse, ChatError> {
    let (token, number) = (token_of(&path.0)?, number_of(&path.1, "chat")?);
    let body = domain::message_body(&json_body(payload).await?);
    let (message, allowance) = post_message(&state, &db, token, number, body).await?;
    Ok(with_limits(HttpResponse::build(StatusCode::CREATED).json(message_json(&message)), allowance))
}

/// Posts a message however creates are made right now (the API's and the page's way alike),
/// counting it against the token's rate limit.
pub async fn post_message(
    state: &ChatState,
    db: &Db,
    token: Token,
    chat: i32,
    body: Result<domain::MessageBody, domain::FieldErrors>,
) -> Result<(Message, Allowance), ChatError> {
    match &state.intake {
        Some(intake) => create_message_through(state, intake.clone(), db, token, chat, body).await,
        None => {
            let allowance = limited(state, &token).await?;
            let now = state.clock.now();
            let message = run(db, move |conn| {
                chat_id(conn, &token, chat)?;
                let body = body.map_err(ChatError::Invalid)?;
                repo::create_message(conn, &token, chat, &body, now)?.ok_or(ChatError::NotFound("chat"))
            })
            .await?;
            Ok((message, allowance))
        }
    }
}

async fn create_message_through(
    state: &ChatState,
    intake: Arc<ChatIntake>,
    db: &Db,
    token: Token,
    chat: i32,
    body: Result<domain::MessageBody, domain::FieldErrors>,
) -> Result<(Message, Allowance), ChatError> {
    let app = intake.application(db, &token).await?;
    for _ in 0..2 {
        match intake.route() {
            IntakeRoute::Redis(epoch) => {
                let body = body.clone().map_err(ChatError::Invalid)?;
                let item = Item::Message { app, chat, number: 0, body: body.as_str().to_string() };
                // The chat exists if its number was issued in this epoch (checked in the same
                // Lua call), or PostgreSQL has it (with no counter yet in this epoch, PostgreSQL
                // has every chat there is).
                let cell = rate_cell(state, &token);
                let (mut known, mut floor) = (false, None);
                let accepted = loop {
                    match intake.accept(&epoch, item.clone(), floor, known, &cell).await {
                        Ok(accepted) => break Some(accepted),
                        Err(Refused::Limited(tat)) => return Err(allowance_of(state, &cell, false, tat).unwrap_err()),
                        Err(Refused::AskPostgres) => {
                            let lookup = token.clone();
                            if run(db, move |conn| Ok(repo::chat(conn, &lookup, chat)?)).await?.is_none() {
                                return Err(ChatError::NotFound("chat"));
                            }
                            known = true;
                        }
                        Err(Refused::NoSuchChat) => return Err(ChatError::NotFound("chat")),
                        Err(Refused::NeedFloor) if floor.is_none() => {
                            floor = Some(run(db, move |conn| Ok(repo::highest_message(conn, app, chat)?)).await?);
                        }
                        Err(_) => break None,
                    }
                };
                match accepted {
                    Some((number, tat)) => return Ok((Message { number, body: body.as_str().to_string() }, allowance_of(state, &cell, true, tat)?)),
                    None => continue,
                }
            }
            IntakeRoute::Postgres => {
                let allowance = limited(state, &token).await?;
                let (intake, token, body) = (intake.clone(), token.clone(), body.clone());
                let now = state.clock.now();
                let made = run(db, move |conn| {
                    chat_id(conn, &token, chat)?;
                    let body = body.map_err(ChatError::Invalid)?;
                    Ok(intake.synchronously(|| repo::create_message(conn, &token, chat, &body, now)).transpose()?)
                })
                .await?;
                if let Some(message) = made.flatten() {
                    return Ok((message, allowance));
                }
            }
            IntakeRoute::Wait => break,
        }
    }
    Err(ChatError::Unavailable("messages are being recovered after Redis lost its state".into()))
}

async fn list_messages(state: State, req: HttpRequest, db: Db, path: web::Path<(String, String)>) -> Result<HttpResponse, ChatError> {
    let (token, number) = (token_of(&path.0)?, number_of(&path.1, "chat")?);
    let allowance = limited(&state, &token).await?;
    let page = page(&req)?;
    let after = after_number(&page)?;
    let messages = run(&db, move |conn| {
        let chat = chat_id(conn, &token, number)?;
        Ok(repo::messages_page(conn, chat, after, page.limit)?)
    })
    .await?;
    Ok(with_limits(HttpResponse::Ok().json(messages.iter().map(message_json).collect::<Vec<_>>()), allowance))
}

async fn show_message(state: State, db: Db, path: web::Path<(String, String, String)>) -> Result<HttpResponse, ChatError> {
    let (token, chat, number) = (token_of(&path.0)?, number_of(&path.1, "chat")?, number_of(&path.2, "message")?);
    let allowance = limited(&state, &token).await?;
    let message = run(&db, move |conn| {
        let chat = chat_id(conn, &token, chat)?;
        repo::message(conn, chat, number)?.ok_or(ChatError::NotFound("message"))
    })
    .await?;
    Ok(with_limits(HttpResponse::Ok().json(message_json(&message)), allowance))
}

async fn edit_message(state: State, db: Db, path: web::Path<(String, String, String)>, payload: web::Payload) -> Result<HttpResponse, ChatError> {
    let (token, chat, number) = (token_of(&path.0)?, number_of(&path.1, "chat")?, number_of(&path.2, "message")?);
    let allowance = limited(&state, &token).await?;
    let body = json_body(payload).await?;
    // A message accepted a moment ago may still be on its way to PostgreSQL (the persister is
    // milliseconds behind): wait up to a second for it rather than call it missing.
    let pending = match (&state.intake, state.intake.as_ref().map(|i| i.route())) {
        (Some(intake), Some(IntakeRoute::Redis(epoch))) => {
            let app = { let t = token.clone(); run(&db, move |conn| Ok(repo::application_id(conn, &t)?)).await? };
            match app {
                Some(app) => intake.messages_issued(&epoch, app, chat).await.ok().flatten().is_some_and(|top| number <= top),
                None => false,
            }
        }
        _ => false,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let (token, body) = (token.clone(), body.clone());
        let now = state.clock.now();
        let edited = run(&db, move |conn| {
            let chat = chat_id(conn, &token, chat)?;
            if repo::message(conn, chat, number)?.is_none() {
                return Ok(None);
            }
            let body = domain::message_body(&body).map_err(ChatError::Invalid)?;
            Ok(repo::edit_message(conn, chat, number, &body, now)?)
        })
        .await;
        match edited {
            Ok(Some(message)) => return Ok(with_limits(HttpResponse::Ok().json(message_json(&message)), allowance)),
            Ok(None) | Err(ChatError::NotFound(_)) if pending && std::time::Instant::now() < deadline => {
                actix_web::rt::time::sleep(std::time::Duration::from_millis(10)).await; // the persister's next batch
            }
            Ok(None) => return Err(ChatError::NotFound("message")),
            Err(e) => return Err(e),
        }
    }
}

/// `?q=` (or `?query=`): messages of this chat holding the text anywhere, in any case.
async fn search_messages(state: State, req: HttpRequest, db: Db, path: web::Path<(String, String)>) -> Result<HttpResponse, ChatError> {
    let (token, number) = (token_of(&path.0)?, number_of(&path.1, "chat")?);
    let allowance = limited(&state, &token).await?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let raw = pairs.iter().find(|(n, _)| n == "q" || n == "query").map(|(_, v)| v.as_str());
    let term = SearchTerm::parse(raw).ok_or_else(|| ChatError::BadRequest("q is required: the text to look for".into()))?;
    let page = page(&req)?;
    let after = page.after.as_ref().map(|_| after_number(&page)).transpose()?.unwrap_or(0);
    let search = state.search.clone();
    let messages = run(&db, move |conn| {
        let chat = chat_id(conn, &token, number)?;
        Ok(search.search(conn, chat, &term, after, page.limit)?)
    })
    .await?;
    Ok(with_limits(HttpResponse::Ok().json(messages.iter().map(message_json).collect::<Vec<_>>()), allowance))
}

crate::api_routes! {
    post "/chat_applications" => create_application { summary: "Create a chat application; its token comes back", query: &[], body: ["name"], keyed: false, public: true }
    get "/chat_applications" => list_applications { summary: "List chat applications", query: PAGE_PARAMS, body: [], keyed: false, public: true }
    get "/chat_applications/{token}" => show_application { summary: "Show a chat application", query: &[], body: [], keyed: false, public: true }
    put "/chat_applications/{token}" => update_application { summary: "Rename a chat application", query: &[], body: ["name"], keyed: false, public: true }
    patch "/chat_applications/{token}" => update_application { summary: "Rename a chat application", query: &[], body: ["name"], keyed: false, public: true }
    post "/applications" => create_application { summary: "Create a chat application (alias)", query: &[], body: ["name"], keyed: false, public: true }
    get "/applications" => list_applications { summary: "List chat applications (alias)", query: PAGE_PARAMS, body: [], keyed: false, public: true }
    get "/applications/{token}" => show_application { summary: "Show a chat application (alias)", query: &[], body: [], keyed: false, public: true }
    put "/applications/{token}" => update_application { summary: "Rename a chat application (alias)", query: &[], body: ["name"], keyed: false, public: true }
    patch "/applications/{token}" => update_application { summary: "Rename a chat application (alias)", query: &[], body: ["name"], keyed: false, public: true }
    post "/chat_applications/{token}/chats" => create_chat { summary: "Create the application's next chat (body ignored)", query: &[], body: [], keyed: false, public: true }
    get "/chat_applications/{token}/chats" => list_chats { summary: "List the application's chats by number", query: PAGE_PARAMS, body: [], keyed: false, public: true }
    get "/chat_applications/{token}/chats/{number}" => show_chat { summary: "Show a chat", query: &[], body: [], keyed: false, public: true }
    post "/chat_applications/{token}/chats/{number}/messages" => create_message { summary: "Post the chat's next message", query: &[], body: ["body"], keyed: false, public: true }
    get "/chat_applications/{token}/chats/{number}/messages" => list_messages { summary: "List the chat's messages by number", query: PAGE_PARAMS, body: [], keyed: false, public: true }
    get "/chat_applications/{token}/chats/{number}/messages/search" => search_messages { summary: "Messages of this chat containing q (alias query), any case", query: SEARCH_PARAMS, body: [], keyed: false, public: true }
    get "/chat_applications/{token}/chats/{number}/messages/{message}" => show_message { summary: "Show a message", query: &[], body: [], keyed: false, public: true }
    put "/chat_applications/{token}/chats/{number}/messages/{message}" => edit_message { summary: "Edit a message's body", query: &[], body: ["body"], keyed: false, public: true }
    patch "/chat_applications/{token}/chats/{number}/messages/{message}" => edit_message { summary: "Edit a message's body", query: &[], body: ["body"], keyed: false, public: true }
    post "/applications/{token}/chats" => create_chat { summary: "Create the application's next chat (body ignored)", query: &[], body: [], keyed: false, public: true }
    get "/applications/{token}/chats" => list_chats { summary: "List the application's chats by number", query: PAGE_PARAMS, body: [], keyed: false, public: true }
    get "/applications/{token}/chats/{number}" => show_chat { summary: "Show a chat", query: &[], body: [], keyed: false, public: true }
    post "/applications/{token}/chats/{number}/messages" => create_message { summary: "Post the chat's next message", query: &[], body: ["body"], keyed: false, public: true }
    get "/applications/{token}/chats/{number}/messages" => list_messages { summary: "List the chat's messages by number", query: PAGE_PARAMS, body: [], keyed: false, public: true }
    get "/applications/{token}/chats/{number}/messages/search" => search_messages { summary: "Messages of this chat containing q (alias query), any case", query: SEARCH_PARAMS, body: [], keyed: false, public: true }
    get "/applications/{token}/chats/{number}/messages/{message}" => show_message { summary: "Show a message", query: &[], body: [], keyed: false, public: true }
    put "/applications/{token}/chats/{number}/messages/{message}" => edit_message { summary: "Edit a message's body", query: &[], body: ["body"], keyed: false, public: true }
    patch "/applications/{token}/chats/{number}/messages/{message}" => edit_message { summary: "Edit a message's body", query: &[], body: ["body"], keyed: false, public: true }
}

const PAGE_PARAMS: &[&str] = &["page", "per_page", "after", "limit"];
const SEARCH_PARAMS: &[&str] = &["q", "query", "after", "limit", "page", "per_page"];
