//! Pages for people: an application's chats, and one chat's conversation with a post form and a
//! search box. Server-rendered and usable without JavaScript; with it, the conversation polls the
//! API for new messages and appends them while the page is open.

use actix_session::Session;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::domain::{self, SearchTerm, Token};
use super::repo::{self, Application, Chat, Message};
use super::search::MessageSearch;
use std::sync::Arc;
use crate::web::{client_ip, csrf, html, see_other, AppError, Db, Layout};

fn token_of(raw: &str) -> Result<Token, AppError> {
    Token::parse(raw).ok_or(AppError::NotFound)
}

#[derive(Template)]
#[template(path = "chat_app.html")]
struct AppPage {
    layout: Layout,
    app: Application,
    chats: Vec<Chat>,
}

/// A page's answer for the chat API's refusals.
fn page_error(e: super::ChatError) -> AppError {
    match e {
        super::ChatError::NotFound(_) => AppError::NotFound,
        super::ChatError::Unavailable(why) => AppError::Unavailable(why),
        super::ChatError::Limited(limited) => AppError::TooMany { retry_after: limited.retry_after, why: format!("{}.", limited) },
        other => AppError::Internal(other.to_string()),
    }
}

async fn application(req: HttpRequest, db: Db, state: web::Data<super::ChatState>, path: web::Path<String>) -> Result<HttpResponse, AppError> {
    let token = token_of(&path)?;
    // A token guessed in the address bar counts as one guessed at the API.
    state.admit(&db, &token, &client_ip(&req)).await.map_err(page_error)?;
    let (app, chats) = db
        .run(move |conn| {
            let app = repo::application(conn, &token)?.ok_or(diesel::result::Error::NotFound)?;
            let chats = repo::chats_page(conn, app.id, 0, 1_000)?;
            Ok::<_, diesel::result::Error>((app, chats))
        })
        .await?;
    html(AppPage { layout: Layout::with_form(&req), app, chats })
}

#[derive(Template)]
#[template(path = "chat_room.html")]
struct RoomPage {
    layout: Layout,
    token: String,
    app_name: String,
    number: i32,
    messages: Vec<Shown>,
    last: i32,
    query: String,
    searching: bool,
    draft: String,
    problem: Option<String>,
}

#[derive(Deserialize)]
struct RoomQuery {
    q: Option<String>,
}

/// A message on the page: its number (its anchor), what it says, and when it was sent (`None`
/// in search results, which come from the search's own read).
pub struct Shown {
    pub number: i32,
    pub body: String,
    /// ISO 8601 for `<time datetime>`, and in words.
    pub sent: Option<(String, String)>,
}

impl From<Message> for Shown {
    fn from(m: Message) -> Shown {
        Shown { number: m.number, body: m.body, sent: None }
    }
}

impl From<repo::SentMessage> for Shown {
    fn from(m: repo::SentMessage) -> Shown {
        let sent = (m.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), m.created_at.format("%b %-d, %H:%M UTC").to_string());
        Shown { number: m.number, body: m.body, sent: Some(sent) }
    }
}

async fn load_room(db: &Db, search: Arc<dyn MessageSearch>, token: Token, number: i32, query: Option<SearchTerm>) -> Result<(Application, Vec<Shown>), AppError> {
    db.run(move |conn| {
        let app = repo::application(conn, &token)?.ok_or(diesel::result::Error::NotFound)?;
        let chat = repo::chat(conn, &token, number)?.ok_or(diesel::result::Error::NotFound)?;
        let messages: Vec<Shown> = match &query {
            Some(term) => search.search(conn, chat.id, term, 0, 100)?.into_iter().map(Shown::from).collect(),
            None => repo::latest_messages(conn, chat.id, 100)?.into_iter().map(Shown::from).collect(),
        };
        Ok::<_, diesel::result::Error>((app, messages))
    })
    .await
}

/// What the page says beyond the messages: the search, and a draft the server refused.
#[derive(Default)]
struct Around {
    query: String,
    draft: String,
    problem: Option<String>,
}

fn room(req: &HttpRequest, token: &str, number: i32, app: Application, messages: Vec<Shown>, around: Around) -> RoomPage {
    let Around { query, draft, problem } = around;
    RoomPage {
        layout: Layout::with_form(req),
        token: token.to_string(),
        app_name: app.name,
        number,
        last: messages.last().map_or(0, |m| m.number),
        searching: !query.is_empty(),
        messages,
        query,
        draft,
        problem,
    }
}

async fn chat_room(
    req: HttpRequest,
    db: Db,
    state: web::Data<super::ChatState>,
    path: web::Path<(String, String)>,
    query: web::Query<RoomQuery>,
) -> Result<HttpResponse, AppError> {
    let token = token_of(&path.0)?;
    let number = domain::number(&path.1).ok_or(AppError::NotFound)?;
    state.admit(&db, &token, &client_ip(&req)).await.map_err(page_error)?;
    let raw = query.into_inner().q.unwrap_or_default();
    let term = SearchTerm::parse(Some(&raw));
    let (app, messages) = load_room(&db, state.search.clone(), token.clone(), number, term.clone()).await?;
    let query = term.map(|_| raw.trim().to_string()).unwrap_or_default();
    let mut response = html(room(&req, token.as_str(), number, app, messages, Around { query, ..Around::default() }))?;
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Deserialize)]
struct PostForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    body: String,
}

async fn post_message(
    req: HttpRequest,
    session: Session,
    db: Db,
    state: web::Data<super::ChatState>,
    path: web::Path<(String, String)>,
    form: web::Form<PostForm>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let token = token_of(&path.0)?;
    let number = domain::number(&path.1).ok_or(AppError::NotFound)?;
    let form = form.into_inner();
    let body = match domain::message_body(&serde_json::json!({ "body": form.body })) {
        Ok(body) => body,
        Err(errors) => {
            let problem = errors.get("body").and_then(|p| p.first()).map(|p| format!("The message {p}."));
            let (app, messages) = load_room(&db, state.search.clone(), token.clone(), number, None).await?;
            let mut response = html(room(&req, token.as_str(), number, app, messages, Around { draft: form.body, problem, ..Around::default() }))?;
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(response);
        }
    };
    let path_token = token.as_str().to_string();
    let (posted, _) = super::routes::post_message(&state, &db, token, &client_ip(&req), number, Ok(body)).await.map_err(page_error)?;
    Ok(see_other(&format!("/chats/{path_token}/{number}#m{}", posted.number)))
}

/// Starts the application's next chat and opens it (the API's create, counted the same way).
async fn start_chat(req: HttpRequest, session: Session, db: Db, state: web::Data<super::ChatState>, path: web::Path<String>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let token = token_of(&path)?;
    let path_token = token.as_str().to_string();
    let (number, _) = super::creates::create(&state, &db, token, &client_ip(&req), super::creates::Create::Chat).await.map_err(page_error)?;
    Ok(see_other(&format!("/chats/{path_token}/{number}#post")))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/chats/{token}", web::get().to(application))
        .route("/chats/{token}", web::post().to(start_chat))
        .route("/chats/{token}/{number}", web::get().to(chat_room))
        .route("/chats/{token}/{number}", web::post().to(post_message));
}
