//! The API's error object, Stripe's shape: `{"error":{"type","code","message","param"}}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    /// A complaint about the request's parameters: never stored under an idempotency key.
    pub validation: bool,
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), param: None, validation: false, retry_after: None }
    }

    pub fn param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// A 400 about the request's parameters.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { validation: true, ..ApiError::new(StatusCode::BAD_REQUEST, code, message) }
    }

    /// A 400 the request was fine but the object's state refuses (stored under an idempotency key).
    pub fn refused(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn missing(param: &str) -> ApiError {
        ApiError::invalid("parameter_missing", format!("Missing required param: {param}.")).param(param)
    }

    pub fn unknown(param: &str) -> ApiError {
        ApiError::invalid("parameter_unknown", format!("Received unknown parameter: {param}.")).param(param)
    }

    pub fn bad_value(param: &str, why: impl std::fmt::Display) -> ApiError {
        ApiError::invalid("parameter_invalid", format!("Invalid {param}: {why}.")).param(param)
    }

    pub fn not_integer(param: &str) -> ApiError {
        ApiError::invalid("parameter_invalid_integer", format!("Invalid integer for {param}: it must be a whole number such as 100.")).param(param)
    }

    pub fn invalid_json(why: impl std::fmt::Display) -> ApiError {
        ApiError::invalid("invalid_json", format!("The request body is not a valid JSON object: {why}."))
    }

    /// Whatever the caller may not see answers as if it did not exist.
    pub fn missing_resource(what: &str, param: Option<&str>) -> ApiError {
        let error = ApiError::new(StatusCode::NOT_FOUND, "resource_missing", format!("No such {what}."));
        match param {
            Some(p) => error.param(p),
            None => error,
        }
    }

    pub fn no_route() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "resource_missing", "Unrecognized request URL.")
    }

    /// The path exists, for other methods (listed in `Allow`).
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "This URL does not take that method; see the Allow header.")
    }

    pub fn unauthenticated(code: &'static str, message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    pub fn idempotency(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(status, code, message)
    }

    pub fn rate_limited(retry_after: u64) -> ApiError {
        ApiError { retry_after: Some(retry_after), ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many attempts; try again later.") }
    }

    pub fn too_large() -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", "The request body is larger than 64 KiB.")
    }

    pub fn unsupported_media() -> ApiError {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Request bodies must be sent with Content-Type: application/json.")
    }

    pub fn internal(why: impl std::fmt::Display) -> ApiError {
        log::error!("API internal error: {why}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "Something went wrong on our side; it is safe to retry.")
    }

    pub fn unavailable(why: impl std::fmt::Display) -> ApiError {
        log::warn!("API unavailable: {why}");
        ApiError { retry_after: Some(1), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Busy right now; it is safe to retry.") }
    }

    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            409 | 422 => "idempotency_error",
            429 => "rate_limit_error",
            s if s >= 500 => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// Whether an idempotency key keeps this answer: not for parameter complaints, 401, 409, 429
    /// or server errors (a retry may well succeed).
    pub fn is_stored(&self) -> bool {
        !self.validation && !matches!(self.status.as_u16(), 401 | 409 | 429) && self.status.as_u16() < 500
    }

    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "type": self.kind(), "code": self.code, "message": self.message, "param": self.param } })
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(after) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, after.to_string()));
        }
        response.insert_header((header::CACHE_CONTROL, "no-store")).json(self.body())
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        ApiError::internal(format!("database: {e}"))
    }
}

impl From<crate::web::AppError> for ApiError {
    fn from(e: crate::web::AppError) -> Self {
        use crate::web::AppError;
        match e {
            AppError::NotFound => ApiError::missing_resource("object", None),
            AppError::Unavailable(why) => ApiError::unavailable(why),
            AppError::Busy { retry_after } => ApiError { retry_after: Some(retry_after), ..ApiError::unavailable("queue full") },
            other => ApiError::internal(other),
        }
    }
}
