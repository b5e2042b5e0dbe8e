//! The chat API of the public challenge (seed 003): applications known by a token, with chats and
//! messages numbered per parent. Its routes and body shapes are the challenge's, so existing
//! clients work unchanged; so are its error shapes (`{"error":…}`, `{"errors":{field:[…]}}`).
//!
//! Chats and messages are accepted through Redis and persisted behind (`intake`), or numbered in
//! PostgreSQL under the parent's row lock when Redis is away or `CHAT_INTAKE=postgres` (`repo`).

pub mod access;
pub mod creates;
pub mod domain;
pub mod intake;
pub mod jobs;
pub mod limits;
pub mod pages;
pub mod repo;
pub mod routes;
pub mod search;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use domain::FieldErrors;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("validation failed")]
    Invalid(FieldErrors),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Limited(limits::Limited),
}

/// What the chat routes need, registered as app data by `app::mount`.
pub struct ChatState {
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
    pub limiter: limits::RateLimiter,
    /// Accepting through Redis (`CHAT_INTAKE=redis`); `None`: every create numbers in PostgreSQL.
    pub intake: Option<std::sync::Arc<intake::ChatIntake>>,
    pub search: std::sync::Arc<dyn search::MessageSearch>,
    pub known: access::KnownApplications,
}

impl ChatState {
    /// Counts a request from `client` against the token's rate limit (429 when it is spent, or
    /// when the client has missed too often).
    pub async fn limited(&self, token: &domain::Token, client: &str) -> Result<limits::Allowance, ChatError> {
        self.limiter.check(token.as_str(), client, self.clock.now().timestamp_millis()).await.map_err(ChatError::Limited)
    }

    /// The token's rate cell for a create, counted in the intake's own Redis call.
    pub fn rate_cell(&self, token: &domain::Token, client: &str) -> limits::RateCell {
        self.limiter.cell(token.as_str(), client, self.clock.now().timestamp_millis())
    }

    /// What a create's answer from Redis means for the limit: the allowance, or 429.
    pub fn allowance(&self, cell: &limits::RateCell, allowed: bool, tat: f64) -> Result<limits::Allowance, ChatError> {
        self.limiter.verdict(allowed, tat, cell.now_ms as f64).map_err(ChatError::Limited)
    }
}

/// Runs the chat API's blocking database work, keeping its errors as the chat API's.
pub async fn run<T: Send + 'static>(
    db: &crate::web::Db,
    work: impl FnOnce(&mut diesel::PgConnection) -> Result<T, ChatError> + Send + 'static,
) -> Result<T, ChatError> {
    db.run(move |conn| Ok::<_, crate::web::AppError>(work(conn))).await.map_err(ChatError::from)?
}

impl ResponseError for ChatError {
    fn status_code(&self) -> StatusCode {
        match self {
            ChatError::NotFound(_) => StatusCode::NOT_FOUND,
            ChatError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ChatError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ChatError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ChatError::Forbidden(_) => StatusCode::FORBIDDEN,
            ChatError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ChatError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ChatError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ChatError::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = match self {
            ChatError::Invalid(errors) => json!({ "errors": errors }),
            ChatError::Database(e) => {
                log::error!("chat API: database: {e}");
                json!({ "error": "something went wrong on our side; it is safe to retry" })
            }
            other => json!({ "error": other.to_string() }),
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ChatError::Unavailable(_) => {
                response.insert_header(("Retry-After", "1"));
            }
            ChatError::Limited(limited) => {
                response.insert_header(("Retry-After", limited.retry_after.to_string()));
                response.insert_header(("RateLimit-Limit", limited.limit.to_string()));
                response.insert_header(("RateLimit-Remaining", "0"));
                response.insert_header(("RateLimit-Reset", limited.retry_after.to_string()));
            }
            _ => {}
        }
        response.json(body)
    }
}

impl From<crate::web::AppError> for ChatError {
    fn from(e: crate::web::AppError) -> Self {
        match e {
            crate::web::AppError::NotFound => ChatError::NotFound("resource"),
            other => ChatError::Unavailable(other.to_string()),
        }
    }
}
