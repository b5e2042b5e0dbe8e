//! Sign in and sign out.

use actix_session::Session;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{password, repo, SessionUser};
use crate::web::{csrf, html, see_other, AppError, Db, Layout};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    email: String,
    next: String,
    problem: Option<String>,
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// Only same-site paths: `next` must never send someone to another site after signing in.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

async fn login_page(session: Session, query: web::Query<NextQuery>) -> Result<HttpResponse, AppError> {
    if SessionUser::from_session(&session).is_some() {
        return Ok(see_other(&safe_next(query.next.as_deref())));
    }
    html(LoginPage {
        layout: Layout::with_form(&session),
        email: String::new(),
        next: safe_next(query.next.as_deref()),
        problem: None,
    })
}

async fn login(session: Session, db: Db, form: web::Form<LoginForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let LoginForm { email, password: given, next, .. } = form.into_inner();
    let lookup_email = email.clone();
    let user = db
        .run(move |conn| {
            let user = repo::find_by_email(conn, &lookup_email)?;
            // The slow hash runs here, off the async workers, on the blocking pool.
            Ok::<_, AppError>(match user {
                Some(user) if password::verify(&user.password_hash, &given) => Some(user),
                Some(_) => None,
                None => {
                    password::verify_against_nothing(&given);
                    None
                }
            })
        })
        .await?;
    let Some(user) = user else {
        let page = LoginPage {
            layout: Layout::with_form(&session),
            email,
            next: safe_next(Some(&next)),
            problem: Some("That email and password don't match an account.".into()),
        };
        return Ok(HttpResponse::Unauthorized().content_type("text/html; charset=utf-8").body(page.render()?));
    };
    SessionUser { id: user.id, name: user.name, email: user.email, is_admin: user.is_admin }.store(&session)?;
    Ok(see_other(&safe_next(Some(&next))))
}

async fn logout(session: Session, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    session.purge();
    Ok(see_other("/"))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout));
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_never_leaves_the_site() {
        assert_eq!(safe_next(Some("/orders/3/checkout")), "/orders/3/checkout");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
