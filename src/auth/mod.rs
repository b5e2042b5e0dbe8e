//! Accounts: who may sign in, and who is signed in on a request.

pub mod password;
pub mod repo;
pub mod routes;

use actix_session::{Session, SessionExt};
use actix_web::dev::Payload;
use actix_web::{http::Method, FromRequest, HttpRequest};
use serde::{Deserialize, Serialize};
use std::future::{ready, Ready};

use crate::web::AppError;

const SESSION_KEY: &str = "user";

/// The signed-in user as the session remembers them; reading it costs no query.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionUser {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub is_admin: bool,
}

impl SessionUser {
    pub fn from_session(session: &Session) -> Option<SessionUser> {
        session.get::<SessionUser>(SESSION_KEY).ok().flatten()
    }

    pub fn store(&self, session: &Session) -> Result<(), AppError> {
        // A new session id on sign-in, so a session fixed before it is worth nothing after.
        session.renew();
        session.insert(SESSION_KEY, self).map_err(|e| AppError::Internal(format!("session: {e}")))
    }
}

/// A handler argument that requires a signed-in user; others are sent to the sign-in page and,
/// for pages they asked for, brought back afterwards.
pub struct CurrentUser(pub SessionUser);

impl FromRequest for CurrentUser {
    type Error = AppError;
    type Future = Ready<Result<CurrentUser, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = req.get_session();
        ready(match SessionUser::from_session(&session) {
            Some(user) => Ok(CurrentUser(user)),
            None => {
                let next = (req.method() == Method::GET).then(|| req.uri().to_string());
                Err(AppError::LoginRequired { next })
            }
        })
    }
}

/// A handler argument that requires an administrator; to anyone else the page does not exist.
pub struct AdminUser(pub SessionUser);

impl FromRequest for AdminUser {
    type Error = AppError;
    type Future = Ready<Result<AdminUser, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let user = match CurrentUser::from_request(req, payload).into_inner() {
            Ok(user) => user,
            Err(e) => return ready(Err(e)),
        };
        ready(if user.0.is_admin { Ok(AdminUser(user.0)) } else { Err(AppError::NotFound) })
    }
}
