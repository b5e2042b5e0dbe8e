//! The chat API's handlers, mounted twice: under `/chat_applications` and its alias
//! `/applications` (same handlers, same data).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::domain::{self, Token};
use super::repo::{self, Application};
use super::ChatError;
use crate::web::Db;

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

async fn show_application(db: Db, path: web::Path<String>) -> Result<HttpResponse, ChatError> {
    let token = Token::parse(&path).ok_or(ChatError::NotFound("application"))?;
    let app = run(&db, move |conn| repo::application(conn, &token)?.ok_or(ChatError::NotFound("application"))).await?;
    Ok(HttpResponse::Ok().json(app_json(&app)))
}

async fn update_application(db: Db, path: web::Path<String>, payload: web::Payload) -> Result<HttpResponse, ChatError> {
    let token = Token::parse(&path).ok_or(ChatError::NotFound("application"))?;
    let body = json_body(payload).await?;
    let now = chrono::Utc::now();
    let app = run(&db, move |conn| {
        // An unknown token is 404 before the body is judged (the challenge's order).
        repo::application(conn, &token)?.ok_or(ChatError::NotFound("application"))?;
        let name = domain::app_name(&body).map_err(ChatError::Invalid)?;
        repo::rename_application(conn, &token, &name, now)?.ok_or(ChatError::NotFound("application"))
    })
    .await?;
    Ok(HttpResponse::Ok().json(app_json(&app)))
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
}

const PAGE_PARAMS: &[&str] = &["page", "per_page", "after", "limit"];
