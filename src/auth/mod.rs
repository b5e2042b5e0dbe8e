//! Accounts: who may sign in, who is signed in on a request, and how often sign-in may be tried.

pub mod password;
pub mod repo;
pub mod routes;
pub mod sessions;
pub mod throttle;

use actix_web::dev::Payload;
use actix_web::{http::Method, FromRequest, HttpMessage, HttpRequest};
use serde::{Deserialize, Serialize};
use std::future::{ready, Future, Ready};
use std::pin::Pin;

use crate::web::{AppError, Db};

/// The signed-in user as their session established it (see `sessions`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionUser {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub is_admin: bool,
}

/// Who is on the other end of this request: put in the request's extensions by
/// `sessions::identify` before any handler runs.
#[derive(Debug, Clone)]
pub struct Visitor(pub Option<SessionUser>);

impl SessionUser {
    pub fn of(req: &HttpRequest) -> Option<SessionUser> {
        req.extensions().get::<Visitor>().and_then(|v| v.0.clone())
    }
}

/// A handler argument that requires a signed-in user; others are sent to the sign-in page and,
/// for pages they asked for, brought back afterwards.
pub struct CurrentUser(pub SessionUser);

impl FromRequest for CurrentUser {
    type Error = AppError;
    type Future = Ready<Result<CurrentUser, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match SessionUser::of(req) {
            Some(user) => Ok(CurrentUser(user)),
            None => {
                let next = (req.method() == Method::GET).then(|| req.uri().to_string());
                Err(AppError::LoginRequired { next })
            }
        })
    }
}

/// A handler argument that requires an administrator; to anyone else the page does not exist.
/// The role is read from the database on every request, so taking it away takes effect at once.
pub struct AdminUser(pub SessionUser);

impl FromRequest for AdminUser {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<AdminUser, AppError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let user = CurrentUser::from_request(req, payload).into_inner();
        let db = Db::from_request(req, payload).into_inner();
        Box::pin(async move {
            let (CurrentUser(user), db) = (user?, db?);
            let user_id = user.id;
            let is_admin = db.run(move |conn| repo::is_admin(conn, user_id)).await?;
            if is_admin {
                Ok(AdminUser(SessionUser { is_admin, ..user }))
            } else {
                Err(AppError::NotFound)
            }
        })
    }
}
