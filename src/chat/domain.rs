//! What the chat API accepts, parsed at the edge: tokens, names, and the request bodies of the
//! public challenge (wrapped or bare), with the challenge's complaint for each mistake.

use rand::RngCore;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// An application's token: 32 lowercase hex characters from the operating system's CSPRNG. It is
/// the application's id for clients and its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn generate() -> Token {
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Token(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// `None` for anything that cannot be a token (so it is simply not found).
    pub fn parse(raw: &str) -> Option<Token> {
        (raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then(|| Token(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A field's problems, by field: the body of a 422 (`{"errors":{"name":["can't be blank"]}}`).
pub type FieldErrors = BTreeMap<&'static str, Vec<String>>;

pub const NAME_MAX: usize = 255;

/// An application's name: a string, not blank, at most 255 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppName(String);

impl AppName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The fields of a body that may come wrapped (`{"chat_application":{…}}`, `{"application":{…}}`)
/// or bare (`{…}`). `None` when the body is not an object at all.
pub fn unwrap<'a>(body: &'a Value, wrappers: &[&str]) -> Option<&'a Map<String, Value>> {
    let object = body.as_object()?;
    for wrapper in wrappers {
        if let Some(Value::Object(inner)) = object.get(*wrapper) {
            return Some(inner);
        }
    }
    Some(object)
}

/// A required string field: present, a string, not blank, at most `max` characters. Clients
/// cannot set anything else (`token`, counts, numbers): other fields are ignored.
fn text(fields: &Map<String, Value>, name: &'static str, max: usize, errors: &mut FieldErrors) -> Option<String> {
    let problem = match fields.get(name) {
        None | Some(Value::Null) => "can't be blank".to_string(),
        Some(Value::String(s)) if s.trim().is_empty() => "can't be blank".to_string(),
        Some(Value::String(s)) if s.contains('\0') => "must not contain NUL characters".to_string(),
        Some(Value::String(s)) if s.chars().count() > max => format!("is too long (maximum is {max} characters)"),
        Some(Value::String(s)) => return Some(s.clone()),
        Some(_) => "must be a string".to_string(),
    };
    errors.entry(name).or_default().push(problem);
    None
}

pub fn app_name(body: &Value) -> Result<AppName, FieldErrors> {
    let mut errors = FieldErrors::new();
    let fields = unwrap(body, &["chat_application", "application"]);
    let name = match fields {
        Some(fields) => text(fields, "name", NAME_MAX, &mut errors),
        None => {
            errors.entry("name").or_default().push("can't be blank".into());
            None
        }
    };
    name.map(AppName).ok_or(errors)
}

pub const BODY_MAX: usize = 10_000;
/// The longest text a search looks for.
pub const SEARCH_MAX: usize = 200;

/// A message's body: a string, not blank, at most 10,000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(String);

impl MessageBody {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn message_body(body: &Value) -> Result<MessageBody, FieldErrors> {
    let mut errors = FieldErrors::new();
    let text = match unwrap(body, &["message"]) {
        Some(fields) => text(fields, "body", BODY_MAX, &mut errors),
        None => {
            errors.entry("body").or_default().push("can't be blank".into());
            None
        }
    };
    text.map(MessageBody).ok_or(errors)
}

/// A chat's or message's number in a path: a positive integer, else simply not found.
pub fn number(raw: &str) -> Option<i32> {
    raw.parse::<i32>().ok().filter(|n| *n > 0)
}

/// What a search looks for: any part of a word, in any case; `%`, `_` and `\` are themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerm(String);

impl SearchTerm {
    /// `None` when missing, blank, longer than `SEARCH_MAX` characters, or holding NUL.
    pub fn parse(raw: Option<&str>) -> Option<SearchTerm> {
        let raw = raw?;
        let term = raw.trim();
        (!term.is_empty() && !raw.contains('\0') && raw.chars().count() <= SEARCH_MAX).then(|| SearchTerm(term.to_string()))
    }

    /// An `ILIKE` pattern matching the term anywhere, its wildcards escaped.
    pub fn like_pattern(&self) -> String {
        let escaped = self.0.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        format!("%{escaped}%")
    }
}

/// Something accepted, not yet known to be in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Chat { app: i64, number: i32 },
    Message { app: i64, chat: i32, number: i32, body: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_are_32_lowercase_hex_and_random() {
        let (a, b) = (Token::generate(), Token::generate());
        assert_ne!(a, b);
        assert!(Token::parse(a.as_str()).is_some());
        assert!(Token::parse(&a.as_str().to_uppercase()).is_none());
        assert!(Token::parse("short").is_none());
    }

    #[test]
    fn search_terms_escape_the_wildcards() {
        assert_eq!(SearchTerm::parse(Some("50%_off")).unwrap().like_pattern(), "%50\\%\\_off%");
        assert_eq!(SearchTerm::parse(Some("a\\b")).unwrap().like_pattern(), "%a\\\\b%");
        assert!(SearchTerm::parse(Some("   ")).is_none());
        assert!(SearchTerm::parse(None).is_none());
    }

    #[test]
    fn bodies_come_wrapped_or_bare() {
        assert_eq!(message_body(&json!({"message": {"body": "hi"}})).unwrap().as_str(), "hi");
        assert_eq!(message_body(&json!({"body": "hi"})).unwrap().as_str(), "hi");
        assert_eq!(message_body(&json!({"body": ""})).unwrap_err()["body"], ["can't be blank"]);
        assert_eq!(message_body(&json!({"body": "x".repeat(10_001)})).unwrap_err()["body"], ["is too long (maximum is 10000 characters)"]);
        assert_eq!(number("3"), Some(3));
        assert_eq!(number("0"), None);
        assert_eq!(number("x"), None);
    }

    #[test]
    fn names_come_wrapped_or_bare_and_are_checked() {
        for body in [json!({"chat_application": {"name": "A"}}), json!({"application": {"name": "A"}}), json!({"name": "A"})] {
            assert_eq!(app_name(&body).unwrap().as_str(), "A");
        }
        assert_eq!(app_name(&json!({"name": "  "})).unwrap_err()["name"], ["can't be blank"]);
        assert_eq!(app_name(&json!({"name": 123})).unwrap_err()["name"], ["must be a string"]);
        assert_eq!(app_name(&json!({"name": "x".repeat(256)})).unwrap_err()["name"], ["is too long (maximum is 255 characters)"]);
        assert!(app_name(&json!({"name": "x".repeat(255), "token": "mine", "chats_count": 9})).is_ok(), "other fields are ignored");
    }
}
