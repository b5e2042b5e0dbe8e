//! Synchronizer-token CSRF protection: a random token kept in the (encrypted) session cookie and
//! repeated in every form; a POST whose token does not match is refused with 403.

use actix_session::Session;
use rand::RngCore;

use super::error::AppError;

const SESSION_KEY: &str = "csrf";

/// A form that carries nothing but its token: the buttons that act (pay, vote, sign out, retry).
#[derive(serde::Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    pub csrf_token: String,
}

pub fn token(session: &Session) -> String {
    if let Ok(Some(existing)) = session.get::<String>(SESSION_KEY) {
        return existing;
    }
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // If the session cannot be written the form will fail its check: safe, and visible.
    let _ = session.insert(SESSION_KEY, &fresh);
    fresh
}

pub fn verify(session: &Session, submitted: &str) -> Result<(), AppError> {
    let expected = session.get::<String>(SESSION_KEY).ok().flatten().ok_or(AppError::Csrf)?;
    if constant_time_eq(expected.as_bytes(), submitted.as_bytes()) {
        Ok(())
    } else {
        Err(AppError::Csrf)
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_must_match_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
