//! API bearer tokens: JWTs signed with HS256 and nothing else.
//!
//! Written here on `hmac` + `sha2` (already built for the signed session cookie) instead of a JWT
//! crate: the only algorithm is HS256, so the header is compared to the one we issue — `alg:none`,
//! RS/HS confusion and `kid` tricks have nothing to attach to — and the signature is checked in
//! constant time before any claim is read.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use uuid::Uuid;

use super::error::ApiError;
use super::ids;
use super::repo::{self, Principal};
use super::MerchantsState;
use crate::web::Db;

type HmacSha256 = Hmac<Sha256>;

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id as callers know it (`usr_…`; JWT's `sub` is a string).
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token we signed (malformed, another algorithm, a bad signature).
    Invalid,
    Expired,
}

pub struct TokenKey {
    secret: Vec<u8>,
}

impl TokenKey {
    /// At least 32 bytes of secret.
    pub fn new(secret: &[u8]) -> Option<TokenKey> {
        (secret.len() >= 32).then(|| TokenKey { secret: secret.to_vec() })
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any length")
    }

    pub fn issue(&self, subject: &str, now: DateTime<Utc>, expires_in: i64) -> (String, Claims) {
        let claims = Claims { sub: subject.to_string(), iat: now.timestamp(), exp: now.timestamp() + expires_in, jti: Uuid::new_v4() };
        let payload = serde_json::to_vec(&claims).expect("claims serialize");
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(payload));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        (format!("{signing_input}.{signature}"), claims)
    }

    /// The claims of a token this key signed that has not expired (no leeway: `exp` is the first
    /// second it is no longer valid).
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Invalid);
        };
        let header = URL_SAFE_NO_PAD.decode(header).map_err(|_| TokenError::Invalid)?;
        let header: serde_json::Value = serde_json::from_slice(&header).map_err(|_| TokenError::Invalid)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(TokenError::Invalid);
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Invalid)?;
        let mut mac = self.mac();
        let signing_input = token.rsplit_once('.').map_or("", |(input, _)| input);
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&signature).map_err(|_| TokenError::Invalid)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Invalid)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid)?;
        if now.timestamp() >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// The caller of a request that carries a bearer token: the token checked, then its user, their
/// links and whether it was revoked read from the database (one query), so that unlinking or
/// revoking applies to the very next request. Both faces use it: the API for every route, the
/// dashboard's CSV for scripts.
pub async fn bearer(req: &HttpRequest) -> Result<(Principal, Claims), ApiError> {
    let state = req.app_data::<web::Data<MerchantsState>>().cloned().ok_or_else(|| ApiError::internal("no merchants state"))?;
    let db = Db::extract(req).await;
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_string())
        .ok_or_else(|| ApiError::unauthenticated("token_missing", "Send a bearer token: Authorization: Bearer <token>."))?;
    let claims = state.tokens.verify(&token, state.clock.now()).map_err(|e| match e {
        TokenError::Expired => ApiError::unauthenticated("token_expired", "The token has expired; ask for a new one."),
        TokenError::Invalid => ApiError::unauthenticated("token_invalid", "The token is not valid."),
    })?;
    let user_id = ids::USER.parse(&claims.sub).ok_or_else(|| ApiError::unauthenticated("token_invalid", "The token is not valid."))?;
    let (jti, issued_at) = (claims.jti, claims.iat);
    let principal = db.map_err(ApiError::from)?.run(move |conn| repo::principal(conn, user_id, jti, issued_at)).await.map_err(ApiError::from)?;
    match principal {
        None => Err(ApiError::unauthenticated("token_invalid", "The token is not valid.")),
        Some(p) if p.revoked => Err(ApiError::unauthenticated(
            "token_revoked",
            "The token has been revoked (signed out, or its user changed the password or signed out everywhere).",
        )),
        Some(principal) => Ok((principal, claims)),
    }
}

/// Tells other areas whose bearer token a request carries (see `web::BearerHolder`): the same
/// check as the merchants' API makes, so a revoked or expired token is refused everywhere alike.
pub struct BearerUsers;

impl crate::web::BearerHolder for BearerUsers {
    fn holder(&self, req: HttpRequest) -> std::pin::Pin<Box<dyn std::future::Future<Output = crate::web::Bearer>>> {
        Box::pin(async move {
            match bearer(&req).await {
                Ok((principal, _)) => crate::web::Bearer::User(principal.id),
                Err(refused) if refused.code == "token_missing" => crate::web::Bearer::Absent,
                Err(refused) => crate::web::Bearer::Refused { code: refused.code, message: refused.message },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::new(&[7u8; 32]).unwrap()
    }

    #[test]
    fn a_token_verifies_until_it_expires_to_the_second() {
        let now = Utc::now();
        let (token, claims) = key().issue("usr_42", now, 60);
        assert_eq!(key().verify(&token, now).unwrap(), claims);
        assert_eq!(claims.sub, "usr_42");
        let at_expiry = now + chrono::Duration::seconds(60);
        assert_eq!(key().verify(&token, at_expiry), Err(TokenError::Expired));
    }

    #[test]
    fn tampered_foreign_and_unsigned_tokens_are_refused() {
        let now = Utc::now();
        let (token, _) = key().issue("usr_42", now, 60);
        let other = TokenKey::new(&[8u8; 32]).unwrap();
        assert_eq!(other.verify(&token, now), Err(TokenError::Invalid));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"sub":"1","iat":0,"exp":9999999999,"jti":"00000000-0000-0000-0000-000000000000"}"#);
        parts[1] = &forged;
        assert_eq!(key().verify(&parts.join("."), now), Err(TokenError::Invalid));
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), forged);
        assert_eq!(key().verify(&none, now), Err(TokenError::Invalid));
        assert_eq!(key().verify("garbage", now), Err(TokenError::Invalid));
        assert!(TokenKey::new(b"short").is_none());
    }
}
