//! The one place where errors become HTTP responses: a page a person can act on, never a stack
//! trace, and a stable error code for machines.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;

use super::Layout;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("not found")]
    NotFound,
    #[error("sign in required")]
    LoginRequired { next: Option<String> },
    #[error("the form's security token is missing or stale")]
    Csrf,
    #[error("{0}")]
    BadRequest(String),
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// Too much work queued: come back after `retry_after` seconds. Nothing was created.
    #[error("busy, retry after {retry_after}s")]
    Busy { retry_after: u64 },
    /// This caller has asked too often: come back after `retry_after` seconds; `why` says what.
    #[error("too many requests: {why}")]
    TooMany { retry_after: u64, why: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn code(&self) -> &'static str {
        match self {
            AppError::NotFound => "not_found",
            AppError::LoginRequired { .. } => "login_required",
            AppError::Csrf => "csrf_failed",
            AppError::BadRequest(_) => "bad_request",
            AppError::Unavailable(_) => "unavailable",
            AppError::Busy { .. } => "queue_full",
            AppError::TooMany { .. } => "rate_limited",
            AppError::Internal(_) => "internal",
        }
    }

    fn page(&self) -> (&'static str, String) {
        match self {
            AppError::NotFound => ("Not found", "We couldn't find that page. It may have moved, or it isn't yours to see.".into()),
            AppError::LoginRequired { .. } => ("Sign in", "Please sign in to continue.".into()),
            AppError::Csrf => (
                "This form has expired",
                "For your security the form could not be accepted. Go back, reload the page and try again.".into(),
            ),
            AppError::BadRequest(why) => ("Something in the request was wrong", why.clone()),
            AppError::Unavailable(_) => (
                "Busy right now",
                "Agora is busy or one of its services is unavailable. Nothing was charged. Please try again in a moment.".into(),
            ),
            AppError::Busy { retry_after } => (
                "Busy right now",
                format!("We are handling a lot of payments at the moment and did not start yours. Nothing was charged. \
                         Please try again in {retry_after} seconds."),
            ),
            AppError::TooMany { why, .. } => ("Too many requests", why.clone()),
            AppError::Internal(_) => (
                "Something went wrong",
                "Something went wrong on our side. Nothing was charged twice. Please try again.".into(),
            ),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    title: &'a str,
    message: &'a str,
    code: &'a str,
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::LoginRequired { .. } => StatusCode::SEE_OTHER,
            AppError::Csrf => StatusCode::FORBIDDEN,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unavailable(_) | AppError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.page_with(Layout::bare())
    }
}

impl AppError {
    /// The error's page in a given frame: `error_response` has no request, so the page first says
    /// nobody is signed in; `middleware::identify` renders it again with the person's own frame.
    pub fn page_with(&self, layout: Layout) -> HttpResponse {
        match self {
            AppError::LoginRequired { next } => {
                let location = match next {
                    Some(next) => format!("/login?next={}", super::url_encode(next)),
                    None => "/login".to_string(),
                };
                return HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish();
            }
            AppError::Internal(why) => log::error!("internal error: {why}"),
            AppError::Unavailable(why) => log::warn!("unavailable: {why}"),
            _ => {}
        }
        let (title, message) = self.page();
        let page = ErrorPage { layout, title, message: &message, code: self.code() };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            AppError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, "5"));
            }
            AppError::Busy { retry_after } | AppError::TooMany { retry_after, .. } => {
                response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            _ => {}
        }
        match page.render() {
            Ok(html) => response.content_type("text/html; charset=utf-8").body(html),
            Err(_) => response.content_type("text/plain; charset=utf-8").body(message),
        }
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        match e {
            diesel::result::Error::NotFound => AppError::NotFound,
            other => AppError::Internal(format!("database: {other}")),
        }
    }
}

impl From<diesel::r2d2::PoolError> for AppError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        AppError::Unavailable(format!("database pool: {e}"))
    }
}

impl From<askama::Error> for AppError {
    fn from(e: askama::Error) -> Self {
        AppError::Internal(format!("template: {e}"))
    }
}
