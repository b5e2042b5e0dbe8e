//! Request bodies as the contract reads them: a JSON object of known fields, each parsed with a
//! precise complaint when it is wrong.

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::merchants::error::ApiError;

pub const MAX_BODY: usize = 64 * 1024;
/// Deeper than any body the API takes: a bomb of nested arrays is refused as invalid JSON.
pub const MAX_DEPTH: usize = 16;

/// A request body: a JSON object.
#[derive(Debug, Clone, Default)]
pub struct Object(pub Map<String, Value>);

/// Reads the body: at most 64 KiB (413), JSON only (415), a JSON object (400 `invalid_json`). An
/// empty body is an empty object, whatever its type.
pub async fn read_object(req: &HttpRequest, mut payload: web::Payload) -> Result<Object, ApiError> {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::too_large());
    }
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::invalid_json(format!("the body could not be read ({e})")))?;
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    // No body at all is no parameters; a body of whitespace is a malformed JSON document.
    if bytes.is_empty() {
        return Ok(Object::default());
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::unsupported_media());
    }
    parse_object(&bytes)
}

pub fn parse_object(bytes: &[u8]) -> Result<Object, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ApiError::invalid_json("it is not UTF-8"))?;
    let value: Value = serde_json::from_str(text).map_err(ApiError::invalid_json)?;
    if depth(&value) > MAX_DEPTH {
        return Err(ApiError::invalid_json(format!("it is nested more than {MAX_DEPTH} levels deep")));
    }
    match value {
        Value::Object(map) => Ok(Object(map)),
        _ => Err(ApiError::invalid_json("it must be an object")),
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

impl Object {
    /// Refuses a field the route does not take (the first, in name order).
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(ApiError::unknown(unknown)),
            None => Ok(()),
        }
    }

    /// An integer field: a JSON number without fraction or exponent. `null` is absent.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| ApiError::not_integer(name)),
            Some(_) => Err(ApiError::not_integer(name)),
        }
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            // PostgreSQL text cannot hold NUL, and no name, email or description needs one.
            Some(Value::String(s)) if s.contains('\0') => Err(ApiError::bad_value(name, "it must not contain NUL characters")),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_value(name, "it must be a string")),
        }
    }

    pub fn required_string(&self, name: &str) -> Result<String, ApiError> {
        self.string(name)?.ok_or_else(|| ApiError::missing(name))
    }

    /// The body as one canonical value (keys sorted, no whitespace): an idempotency fingerprint.
    pub fn canonical(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_whole_numbers_only() {
        let body = parse_object(br#"{"a":10,"b":10.5,"c":1000.0,"d":1e3,"e":"10","f":true}"#).unwrap();
        assert_eq!(body.int("a").unwrap(), Some(10));
        for name in ["b", "c", "d", "e", "f"] {
            assert_eq!(body.int(name).unwrap_err().code, "parameter_invalid_integer", "{name}");
        }
    }

    #[test]
    fn bodies_must_be_shallow_objects() {
        assert_eq!(parse_object(b"[1]").unwrap_err().code, "invalid_json");
        assert_eq!(parse_object(b"{\"a\":").unwrap_err().code, "invalid_json");
        assert_eq!(parse_object(&[0xff, 0xfe]).unwrap_err().code, "invalid_json");
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(40), "]".repeat(40));
        assert_eq!(parse_object(deep.as_bytes()).unwrap_err().code, "invalid_json");
    }

    #[test]
    fn the_fingerprint_ignores_key_order_and_whitespace() {
        let a = parse_object(br#"{"amount": 100, "currency":"usd"}"#).unwrap();
        let b = parse_object(br#"{"currency":"usd","amount":100}"#).unwrap();
        assert_eq!(a.canonical(), b.canonical());
    }
}
