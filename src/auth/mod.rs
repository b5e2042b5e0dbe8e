//! Accounts: who may sign in, who is signed in on a request, and how often sign-in may be tried.

pub mod devices;
pub mod domain;
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
            None => Err(AppError::LoginRequired { next: return_to(req) }),
        })
    }
}

/// Where to come back to after signing in: the page asked for, or — for a form sent after the
/// session ended (Pay, say) — the page the form was on, as the browser's `Referer` names it, when
/// that is this site.
fn return_to(req: &HttpRequest) -> Option<String> {
    if req.method() == Method::GET {
        return Some(req.uri().to_string());
    }
    let referer = req.headers().get(actix_web::http::header::REFERER)?.to_str().ok()?;
    let info = req.connection_info();
    let rest = referer.strip_prefix("http://").or_else(|| referer.strip_prefix("https://"))?;
    let path = rest.strip_prefix(info.host())?;
    path.starts_with('/').then(|| path.to_string())
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
