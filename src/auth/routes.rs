//! Sign in, sign out (here or everywhere), and the account page.

use actix_session::Session;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::sessions::{self, token_hash, TOKEN};
use super::{password, repo, AuthState, CurrentUser, SessionUser};
use crate::web::{client_ip, csrf, html, see_other, AppError, Db, Layout};

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

/// Only paths on this site: `next` must never send someone elsewhere after signing in. Browsers
/// drop tabs and newlines from URLs and read `\` as `/`, so `/\t/evil.example` would become
/// `//evil.example`: anything but printable ASCII is refused outright.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

async fn login_page(req: HttpRequest, query: web::Query<NextQuery>) -> Result<HttpResponse, AppError> {
    if SessionUser::of(&req).is_some() {
        return Ok(see_other(&safe_next(query.next.as_deref())));
    }
    html(LoginPage { layout: Layout::with_form(&req), email: String::new(), next: safe_next(query.next.as_deref()), problem: None })
}

fn login_problem(req: &HttpRequest, status: StatusCode, email: String, next: &str, problem: String) -> Result<HttpResponse, AppError> {
    let page = LoginPage { layout: Layout::with_form(req), email, next: safe_next(Some(next)), problem: Some(problem) };
    Ok(HttpResponse::build(status).content_type("text/html; charset=utf-8").body(page.render()?))
}

fn in_words(wait: std::time::Duration) -> String {
    match wait.as_secs() {
        s if s < 60 => format!("{s} seconds"),
        s => format!("{} minutes", s.div_ceil(60)),
    }
}

/// Signs in. The throttle is asked first (no hash for a closed account or address); the account
/// is read with a connection that goes straight back to the pool; the slow hash runs on the
/// bounded hashing pool; only then is the session row written.
async fn login(req: HttpRequest, session: Session, db: Db, state: web::Data<AuthState>, form: web::Form<LoginForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let LoginForm { email, password: given, next, .. } = form.into_inner();
    let services = state.clone();
    let ip = client_ip(&req);
    if let Err(throttled) = services.logins.check(&email, &ip).await {
        let wait = throttled.retry_after;
        let problem = format!("Too many failed sign-in attempts. For your security, sign-in is paused: try again in {}.", in_words(wait));
        let mut response = login_problem(&req, StatusCode::TOO_MANY_REQUESTS, email, &next, problem)?;
        response.headers_mut().insert(header::RETRY_AFTER, wait.as_secs().max(1).into());
        return Ok(response);
    }
    let lookup = email.clone();
    let user = db.run(move |conn| repo::find_by_email(conn, &lookup)).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let matches = services
        .hashing
        .run(move || password::check(stored.as_deref(), &given))
        .await
        .map_err(|_| AppError::Unavailable("the password-hashing queue is full".into()))?;
    let Some(user) = user.filter(|_| matches) else {
        services.logins.failed(&email, &ip).await;
        return login_problem(&req, StatusCode::UNAUTHORIZED, email, &next, "That email and password don't match an account.".into());
    };
    services.logins.succeeded(&email, &ip).await;
    let token = sessions::new_token();
    let (hash, user_id, expires_at) = (token_hash(&token), user.id, services.sessions.expires_at(services.clock.now()));
    let agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    db.run(move |conn| repo::create_session(conn, user_id, &hash, &agent, expires_at)).await?;
    let signed_in = SessionUser { id: user.id, name: user.name, email: user.email, is_admin: user.is_admin };
    services.sessions.started(&token, &signed_in).await;
    // A new cookie on sign-in, so a session fixed before it is worth nothing after.
    session.renew();
    session.insert(TOKEN, &token).map_err(|e| AppError::Internal(format!("session: {e}")))?;
    Ok(see_other(&safe_next(Some(&next))))
}

/// Ends this session: the row is revoked, so the cookie is worthless wherever it was copied.
async fn logout(session: Session, db: Db, state: web::Data<AuthState>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    if let Some(token) = session.get::<String>(TOKEN).ok().flatten() {
        let (hash, now) = (token_hash(&token), state.clock.now());
        let revoked = hash.clone();
        db.run(move |conn| repo::revoke_session(conn, &revoked, now)).await?;
        state.sessions.ended(&[hash]).await;
    }
    session.purge();
    Ok(see_other("/"))
}

pub struct SessionView {
    pub device: String,
    pub started: String,
    pub this_one: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    layout: Layout,
    name: String,
    email: String,
    sessions: Vec<SessionView>,
}

async fn account(req: HttpRequest, user: CurrentUser, session: Session, db: Db, state: web::Data<AuthState>) -> Result<HttpResponse, AppError> {
    let (user_id, now) = (user.0.id, state.clock.now());
    let mine = session.get::<String>(TOKEN).ok().flatten().map(|t| token_hash(&t));
    let active = db.run(move |conn| repo::active_sessions(conn, user_id, now)).await?;
    let sessions = active
        .into_iter()
        .map(|s| SessionView {
            this_one: mine.as_deref() == Some(s.token_hash.as_slice()),
            device: if s.user_agent.is_empty() { "Unknown device".into() } else { s.user_agent },
            started: s.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        })
        .collect();
    let page = AccountPage { layout: Layout::new(&req), name: user.0.name, email: user.0.email, sessions };
    let mut response = html(page)?;
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Ends every session of the account, on every device, this one included.
async fn sign_out_everywhere(user: CurrentUser, session: Session, db: Db, state: web::Data<AuthState>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let (user_id, now) = (user.0.id, state.clock.now());
    let revoked = db.run(move |conn| repo::revoke_all_sessions(conn, user_id, now)).await?;
    state.sessions.ended(&revoked).await;
    session.purge();
    Ok(see_other("/login"))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/account", web::get().to(account))
        .route("/account/sign-out-everywhere", web::post().to(sign_out_everywhere));
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_never_leaves_the_site() {
        assert_eq!(safe_next(Some("/orders/3/checkout")), "/orders/3/checkout");
        assert_eq!(safe_next(Some("/posts/2?after=000000000001")), "/posts/2?after=000000000001");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("/\t/evil.example")), "/", "browsers strip the tab");
        assert_eq!(safe_next(Some("/\n/evil.example")), "/");
        assert_eq!(safe_next(Some("/ /x")), "/");
        assert_eq!(safe_next(Some("/caf\u{e9}")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
