//! The chat API's handlers, mounted twice: under `/chat_applications` and its alias
//! `/applications` (same handlers, same data).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::domain::{self, SearchTerm, Token};
use super::repo::{self, Application, Chat, Message};
use super::creates::{chat_id, create, Create};
use super::intake::Route as IntakeRoute;
use super::limits::Allowance;
use super::{run, ChatError, ChatState};
use crate::web::openapi::{Body, Field, Table, Ty};
use super::access::{caller, may_rename};
use crate::web::{client_ip, Db};

type State = web::Data<ChatState>;

/// The `RateLimit-*` headers (IETF draft) on an answer.
fn with_limits(mut response: HttpResponse, allowance: Allowance) -> HttpResponse {
    let headers = response.headers_mut();
    for (name, value) in [("ratelimit-limit", allowance.limit as u64), ("ratelimit-remaining", allowance.remaining as u64), ("ratelimit-reset", allowance.reset)] {
        headers.insert(actix_web::http::header::HeaderName::from_static(name), actix_web::http::header::HeaderValue::from(value));
    }
    response
}

/// Room for the longest message however it is escaped (`\\udxxx\\udxxx` is 12 bytes for one
/// character: 10,000 of them are 120 KB), so a body the contract allows is never refused for its
/// size.
pub const MAX_BODY: usize = 256 * 1024;
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
            None => Ok(None),
            Some(raw) => raw.parse::<i64>().ok().filter(|n| *n >= min).map(Some).ok_or_else(|| ChatError::BadRequest(format!("{name} must be a whole number of at least {min}"))),
        }
    };
    let size = number("per_page", 1)?.or(number("limit", 1)?).unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
    let page = number("page", 1)?.unwrap_or(1);
    Ok(Page { after: get("after").map(str::to_string), offset: (page - 1).saturating_mul(size), limit: size })
}

/// Made by the caller: owned by the signed-in user or bearer token's user, or by nobody (then
/// this answer is the only place its token appears).
async fn create_application(req: HttpRequest, db: Db, payload: web::Payload) -> Result<HttpResponse, ChatError> {
    let owner = caller(&req).await?;
    let name = domain::app_name(&json_body(payload).await?).map_err(ChatError::Invalid)?;
    let app = run(&db, move |conn| Ok(repo::create_application(conn, &name, owner)?)).await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(app_json(&app)))
}

/// The caller's own applications (none for an anonymous caller): a token is never listed to
/// anyone but its owner.
async fn list_applications(req: HttpRequest, db: Db) -> Result<HttpResponse, ChatError> {
    let owner = caller(&req).await?;
    let page = page(&req)?;
    let after = match &page.after {
        Some(raw) => Some(Token::parse(raw).ok_or(ChatError::NotFound("application"))?),
        None => None,
    };
    let Some(owner) = owner else { return Ok(HttpResponse::Ok().json(json!([]))) };
    let apps = run(&db, move |conn| {
        repo::applications_page(conn, owner, after.as_ref(), page.offset, page.limit)?.ok_or(ChatError::NotFound("application"))
    })
    .await?;
    Ok(HttpResponse::Ok().json(apps.iter().map(app_json).collect::<Vec<_>>()))
}

async fn show_application(state: State, req: HttpRequest, db: Db, path: web::Path<String>) -> Result<HttpResponse, ChatError> {
    let (token, client) = (token_of(&path)?, client_ip(&req));
    let app = state.application(&db, &token, &client).await?;
    let allowance = state.limited(&token, &client).await?;
    Ok(with_limits(HttpResponse::Ok().json(app_json(&app)), allowance))
}

async fn update_application(state: State, req: HttpRequest, db: Db, path: web::Path<String>, payload: web::Payload) -> Result<HttpResponse, ChatError> {
    let (token, client) = (token_of(&path)?, client_ip(&req));
    let who = caller(&req).await?;
    // An unknown token is 404 before the body is judged (the challenge's order).
    let app = state.application(&db, &token, &client).await?;
    let allowance = state.limited(&token, &client).await?;
    may_rename(&app, who)?;
    let name = domain::app_name(&json_body(payload).await?).map_err(ChatError::Invalid)?;
    let now = state.clock.now();
    let app = run(&db, move |conn| repo::rename_application(conn, app.id, &name, now)?.ok_or(ChatError::NotFound("application"))).await?;
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

async fn create_chat(state: State, req: HttpRequest, db: Db, path: web::Path<String>) -> Result<HttpResponse, ChatError> {
    let token = token_of(&path)?;
    let (number, allowance) = create(&state, &db, token, &client_ip(&req), Create::Chat).await?;
    Ok(with_limits(HttpResponse::build(StatusCode::CREATED).json(json!({ "number": number, "messages_count": 0 })), allowance))
}

async fn list_chats(state: State, req: HttpRequest, db: Db, path: web::Path<String>) -> Result<HttpResponse, ChatError> {
    let token = token_of(&path)?;
    let (app, allowance) = state.admit(&db, &token, &client_ip(&req)).await?;
    let page = page(&req)?;
    let after = after_number(&page)?;
    let chats = run(&db, move |conn| Ok(repo::chats_page(conn, app, after, page.limit)?)).await?;
    Ok(with_limits(HttpResponse::Ok().json(chats.iter().map(chat_json).collect::<Vec<_>>()), allowance))
}

async fn show_chat(state: State, req: HttpRequest, db: Db, path: web::Path<(String, String)>) -> Result<HttpResponse, ChatError> {
    let (token, number) = (token_of(&path.0)?, number_of(&path.1, "chat")?);
    let (_, allowance) = state.admit(&db, &token, &client_ip(&req)).await?;
    let chat = run(&db, move |conn| repo::chat(conn, &token, number)?.ok_or(ChatError::NotFound("chat"))).await?;
    Ok(with_limits(HttpResponse::Ok().json(chat_json(&chat)), allowance))
}

async fn create_message(state: State, req: HttpRequest, db: Db, path: web::Path<(String, String)>, payload: web::Payload) -> Result<HttpResponse, ChatError> {
    let (token, number) = (token_of(&path.0)?, number_of(&path.1, "chat")?);
    let body = domain::message_body(&json_body(payload).await?);
    let (message, allowance) = post_message(&state, &db, token, &client_ip(&req), number, body).await?;
    Ok(with_limits(HttpResponse::build(StatusCode::CREATED).json(message_json(&message)), allowance))
}

/// Posts a message however creates are made right now (the API's and the page's way alike),
/// counting it against the token's rate limit.
pub async fn post_message(
    state: &ChatState,
    db: &Db,
    token: Token,
    client: &str,
    chat: i32,
    body: Result<domain::MessageBody, domain::FieldErrors>,
) -> Result<(Message, Allowance), ChatError> {
    let text = body.as_ref().map(|b| b.as_str().to_string()).unwrap_or_default();
    let (number, allowance) = create(state, db, token, client, Create::Message { chat, body }).await?;
    Ok((Message { number, body: text }, allowance))
}

async fn list_messages(state: State, req: HttpRequest, db: Db, path: web::Path<(String, String)>) -> Result<HttpResponse, ChatError> {
    let (token, number) = (token_of(&path.0)?, number_of(&path.1, "chat")?);
    let (_, allowance) = state.admit(&db, &token, &client_ip(&req)).await?;
    let page = page(&req)?;
    let after = after_number(&page)?;
    let messages = run(&db, move |conn| {
        let chat = chat_id(conn, &token, number)?;
        Ok(repo::messages_page(conn, chat, after, page.limit)?)
    })
    .await?;
    Ok(with_limits(HttpResponse::Ok().json(messages.iter().map(message_json).collect::<Vec<_>>()), allowance))
}

async fn show_message(state: State, req: HttpRequest, db: Db, path: web::Path<(String, String, String)>) -> Result<HttpResponse, ChatError> {
    let (token, chat, number) = (token_of(&path.0)?, number_of(&path.1, "chat")?, number_of(&path.2, "message")?);
    let (_, allowance) = state.admit(&db, &token, &client_ip(&req)).await?;
    let message = run(&db, move |conn| {
        let chat = chat_id(conn, &token, chat)?;
        repo::message(conn, chat, number)?.ok_or(ChatError::NotFound("message"))
    })
    .await?;
    Ok(with_limits(HttpResponse::Ok().json(message_json(&message)), allowance))
}

async fn edit_message(state: State, req: HttpRequest, db: Db, path: web::Path<(String, String, String)>, payload: web::Payload) -> Result<HttpResponse, ChatError> {
    let (token, chat, number) = (token_of(&path.0)?, number_of(&path.1, "chat")?, number_of(&path.2, "message")?);
    let (app, allowance) = state.admit(&db, &token, &client_ip(&req)).await?;
    let body = json_body(payload).await?;
    // A message accepted a moment ago may still be on its way to PostgreSQL (the persister is
    // milliseconds behind): wait up to a second for it rather than call it missing.
    let pending = match (&state.intake, state.intake.as_ref().map(|i| i.route())) {
        (Some(intake), Some(IntakeRoute::Redis(epoch))) => intake.messages_issued(&epoch, app, chat).await.ok().flatten().is_some_and(|top| number <= top),
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
    let (_, allowance) = state.admit(&db, &token, &client_ip(&req)).await?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let raw = pairs.iter().find(|(n, _)| n == "q" || n == "query").map(|(_, v)| v.as_str());
    let term = SearchTerm::parse(raw).ok_or_else(|| ChatError::BadRequest("q is required: the text to look for, 1 to 200 characters".into()))?;
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

const PAGE: Field = Field::optional("page", Ty::Int { min: 1, max: i64::MAX }).about("1-based; with per_page");
const PER_PAGE: Field = Field::optional("per_page", Ty::Int { min: 1, max: i64::MAX }).about("100 by default; more than 1,000 is taken as 1,000");
const LIMIT: Field = Field::optional("limit", Ty::Int { min: 1, max: i64::MAX }).about("per_page's alias");
/// Pages of chats or messages: by page, or after a number.
const NUMBERED: &[Field] =
    &[PAGE, PER_PAGE, LIMIT, Field::optional("after", Ty::Int { min: 0, max: i32::MAX as i64 }).about("The number the page starts after")];
const TOKEN: Field = Field::required("token", Ty::Text).about("The application's token");
const CHAT: Field = Field::required("number", Ty::Int { min: 1, max: i32::MAX as i64 }).about("The chat's number");
const MESSAGE: Field = Field::required("message", Ty::Int { min: 1, max: i32::MAX as i64 }).about("The message's number");
const NAME: Option<Body> =
    Some(Body { fields: &[Field::required("name", Ty::Words { max: domain::NAME_MAX })], closed: false, required: true });
const TEXT: Option<Body> =
    Some(Body { fields: &[Field::required("body", Ty::Words { max: domain::BODY_MAX })], closed: false, required: true });

// Listed once; mounted under `/chat_applications` and its alias `/applications` (same handlers,
// same data). Other fields of a body are ignored, as the challenge's clients send them.
crate::api_routes! {
    prefixes: ["/chat_applications", "/applications"];
    post "" => create_application { summary: "Create a chat application; its token comes back", body: NAME, public: true, status: 201, answer: Some("Application") }
    get "" => list_applications {
        summary: "List the caller's own chat applications (signed in, or by API bearer token; none for anonymous callers)",
        query: &[PAGE, PER_PAGE, LIMIT, Field::optional("after", Ty::Text).about("The token the page starts after")],
        public: true, answer: Some("Applications"),
    }
    get "/{token}" => show_application { summary: "Show a chat application", path_params: &[TOKEN], public: true, answer: Some("Application") }
    put "/{token}" => update_application { summary: "Rename a chat application (its owner's, if it has one)", path_params: &[TOKEN], body: NAME, public: true, answer: Some("Application") }
    patch "/{token}" => update_application { summary: "Rename a chat application (its owner's, if it has one)", path_params: &[TOKEN], body: NAME, public: true, answer: Some("Application") }
    post "/{token}/chats" => create_chat { summary: "Create the application's next chat (any body is ignored)", path_params: &[TOKEN], public: true, status: 201, answer: Some("Chat") }
    get "/{token}/chats" => list_chats { summary: "List the application's chats by number", path_params: &[TOKEN], query: NUMBERED, public: true, answer: Some("Chats") }
    get "/{token}/chats/{number}" => show_chat { summary: "Show a chat", path_params: &[TOKEN, CHAT], public: true, answer: Some("Chat") }
    post "/{token}/chats/{number}/messages" => create_message {
        summary: "Post the chat's next message", path_params: &[TOKEN, CHAT], body: TEXT, public: true, status: 201, answer: Some("Message"),
    }
    get "/{token}/chats/{number}/messages" => list_messages {
        summary: "List the chat's messages by number", path_params: &[TOKEN, CHAT], query: NUMBERED, public: true, answer: Some("Messages"),
    }
    get "/{token}/chats/{number}/messages/search" => search_messages {
        summary: "Messages of this chat containing q, in any case (query is q's alias)",
        path_params: &[TOKEN, CHAT],
        query: &[
            Field::required("q", Ty::Words { max: domain::SEARCH_MAX }).about("The text to look for"),
            PAGE,
            PER_PAGE,
            LIMIT,
            Field::optional("after", Ty::Int { min: 0, max: i32::MAX as i64 }).about("The number the page starts after"),
        ],
        public: true, answer: Some("Messages"),
    }
    get "/{token}/chats/{number}/messages/{message}" => show_message { summary: "Show a message", path_params: &[TOKEN, CHAT, MESSAGE], public: true, answer: Some("Message") }
    put "/{token}/chats/{number}/messages/{message}" => edit_message {
        summary: "Edit a message's body", path_params: &[TOKEN, CHAT, MESSAGE], body: TEXT, public: true, answer: Some("Message"),
    }
    patch "/{token}/chats/{number}/messages/{message}" => edit_message {
        summary: "Edit a message's body", path_params: &[TOKEN, CHAT, MESSAGE], body: TEXT, public: true, answer: Some("Message"),
    }
}

/// The chat API in the document, and its answers to requests no route takes.
pub static TABLE: Table = Table {
    prefixes: PREFIXES,
    routes: ROUTES,
    schemas,
    error: "ChatError",
    refuse: |status| {
        let message = if status == StatusCode::METHOD_NOT_ALLOWED { "this URL does not take that method" } else { "no such route" };
        HttpResponse::build(status).json(json!({ "error": message }))
    },
    headers: &[
        ("RateLimit-Limit", "Requests the token may make per window"),
        ("RateLimit-Remaining", "Requests left in this window"),
        ("RateLimit-Reset", "Seconds until the window resets"),
    ],
};

/// The chat API's objects and errors, in the challenge's shapes.
fn schemas() -> Value {
    let int = json!({ "type": "integer" });
    let application = json!({
        "type": "object",
        "required": ["name", "token", "chats_count"],
        "properties": { "name": { "type": "string" }, "token": { "type": "string" }, "chats_count": int },
    });
    let chat = json!({ "type": "object", "required": ["number", "messages_count"], "properties": { "number": int, "messages_count": int } });
    let message = json!({ "type": "object", "required": ["number", "body"], "properties": { "number": int, "body": { "type": "string" } } });
    json!({
        "Application": application,
        "Applications": { "type": "array", "items": { "$ref": "#/components/schemas/Application" } },
        "Chat": chat,
        "Chats": { "type": "array", "items": { "$ref": "#/components/schemas/Chat" } },
        "Message": message,
        "Messages": { "type": "array", "items": { "$ref": "#/components/schemas/Message" } },
        "ChatError": {
            "description": "{\"error\": why} — or, for a body that cannot be taken (422), {\"errors\": {field: [problems]}}",
            "oneOf": [
                { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } }, "additionalProperties": false },
                {
                    "type": "object",
                    "required": ["errors"],
                    "properties": { "errors": { "type": "object", "additionalProperties": { "type": "array", "items": { "type": "string" } } } },
                    "additionalProperties": false,
                },
            ],
        },
    })
}

