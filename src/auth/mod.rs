//! Accounts: who may sign in, who is signed in on a request, and how often sign-in may be tried.

pub mod password;
pub mod repo;
pub mod routes;
pub mod sessions;
pub mod throttle;

use actix_web::dev::Payload;
use actix_web::{http::Method, FromRequest, HttpRequest};
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;

use crate::clock::Clock;
use crate::web::{AppError, Db};

/// The signed-in user as their session established it (see `sessions`): the HTTP layer's
/// `Viewer`, which this area fills in through `web::Identify`.
pub use crate::web::Viewer as SessionUser;

/// What the sign-in pages need, registered as app data by `app::mount`.
pub struct AuthState {
    pub clock: Arc<dyn Clock>,
    pub sessions: Arc<sessions::SessionStore>,
    pub logins: Arc<throttle::LoginThrottle>,
    pub hashing: Arc<password::HashPool>,
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
