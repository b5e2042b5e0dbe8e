//! Sign in, sign out (here or everywhere), and the account page.

use actix_session::Session;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::sessions::{self, token_hash, TOKEN};
use super::domain::{AccountInputError, DisplayName, Email, NewPassword};
use super::{password, repo, AuthState, CurrentUser, SessionUser};
use crate::web::{client_ip, csrf, html, see_other, see_other_with_notice, AppError, Db, Layout};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    email: String,
    next: String,
    problem: Option<String>,
}

impl LoginPage {
    /// Why someone sent here to sign in is here: said unless they came of their own accord.
    fn why(&self) -> Option<&'static str> {
        (self.next != "/").then_some("Please sign in to continue. You'll be taken back to the page you were on.")
    }
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
    if csrf::verify(&session, &form.csrf_token).is_err() {
        // A sign-in page left open until its cookie went: the form again, email kept, new token.
        let LoginForm { email, next, .. } = form.into_inner();
        return login_problem(&req, StatusCode::FORBIDDEN, email, &next, "This page had been open a long time, so please sign in again.".into());
    }
    let LoginForm { email, password: given, next, .. } = form.into_inner();
    let services = state.clone();
    let ip = client_ip(&req);
    if let Err(throttled) = services.logins.reserve(&email, &ip).await {
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
        return login_problem(&req, StatusCode::UNAUTHORIZED, email, &next, "That email and password don't match an account.".into());
    };
    services.logins.succeeded(&email, &ip).await;
    let signed_in = SessionUser { id: user.id, name: user.name, email: user.email, is_admin: user.is_admin, is_staff: false };
    start_session(&req, &session, &db, &services, signed_in).await?;
    Ok(see_other(&safe_next(Some(&next))))
}

/// Records a new session for `user` and puts its token in a new cookie.
async fn start_session(req: &HttpRequest, session: &Session, db: &Db, state: &AuthState, user: SessionUser) -> Result<(), AppError> {
    let token = sessions::new_token();
    let (hash, user_id, expires_at) = (token_hash(&token), user.id, state.sessions.expires_at(state.clock.now()));
    let agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let is_staff = db
        .run(move |conn| {
            repo::create_session(conn, user_id, &hash, &agent, expires_at)?;
            repo::is_staff(conn, user_id)
        })
        .await?;
    let user = SessionUser { is_staff, ..user };
    state.sessions.started(&token, &user).await;
    // A new cookie on sign-in, so a session fixed before it is worth nothing after.
    session.renew();
    session.insert(TOKEN, &token).map_err(|e| AppError::Internal(format!("session: {e}")))
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    layout: Layout,
    name: String,
    email: String,
    next: String,
    problem: Option<String>,
}

#[derive(Deserialize)]
struct SignupForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_again: String,
    #[serde(default)]
    next: String,
}

fn parse_signup(form: &SignupForm) -> Result<(DisplayName, Email, NewPassword), AccountInputError> {
    Ok((DisplayName::parse(&form.name)?, Email::parse(&form.email)?, NewPassword::parse(&form.password, &form.password_again)?))
}

async fn signup_page(req: HttpRequest, query: web::Query<NextQuery>) -> Result<HttpResponse, AppError> {
    let next = safe_next(query.next.as_deref());
    if SessionUser::of(&req).is_some() {
        return Ok(see_other(&next));
    }
    html(SignupPage { layout: Layout::with_form(&req), name: String::new(), email: String::new(), next, problem: None })
}

/// Creates an account and signs it in. Problems come back on the form with what was typed (but
/// never the password). Sign-up is throttled per address like sign-in, since it also hashes.
async fn signup(req: HttpRequest, session: Session, db: Db, state: web::Data<AuthState>, form: web::Form<SignupForm>) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    let next = safe_next(Some(&form.next));
    let again = |problem: String, status: StatusCode| -> Result<HttpResponse, AppError> {
        let page = SignupPage { layout: Layout::with_form(&req), name: form.name.clone(), email: form.email.clone(), next: next.clone(), problem: Some(problem) };
        Ok(HttpResponse::build(status).content_type("text/html; charset=utf-8").body(page.render()?))
    };
    if csrf::verify(&session, &form.csrf_token).is_err() {
        return again("This form had expired, so no account was made yet. Please send it again.".into(), StatusCode::FORBIDDEN);
    }
    let (name, email, password) = match parse_signup(&form) {
        Ok(parsed) => parsed,
        Err(problem) => return again(problem.to_string(), StatusCode::UNPROCESSABLE_ENTITY),
    };
    let ip = client_ip(&req);
    if let Err(throttled) = state.logins.reserve(email.as_str(), &ip).await {
        let problem = format!("Too many attempts from here. Please try again in {}.", in_words(throttled.retry_after));
        return again(problem, StatusCode::TOO_MANY_REQUESTS);
    }
    let secret = password.into_inner();
    let hash = state.hashing.run(move || password::hash(&secret)).await.map_err(|_| AppError::Unavailable("the password-hashing queue is full".into()))?;
    let (email_text, name_text) = (email.as_str().to_string(), name.as_str().to_string());
    let created = db.run(move |conn| repo::create(conn, &email_text, &name_text, &hash)).await?;
    let Some(user_id) = created else {
        return again("An account with this email already exists. Sign in instead, or use another address.".into(), StatusCode::CONFLICT);
    };
    state.logins.succeeded(email.as_str(), &ip).await;
    let user = SessionUser { id: user_id, name: name.as_str().to_string(), email: email.as_str().to_string(), is_admin: false, is_staff: false };
    start_session(&req, &session, &db, &state, user).await?;
    Ok(see_other_with_notice(&req, &next, "Welcome to Agora: your account is ready."))
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
    /// The merchants this person is staff of, and their role at each.
    merchants: Vec<(String, String)>,
    /// What was wrong with a password change, shown by its form.
    problem: Option<String>,
}

async fn account(req: HttpRequest, user: CurrentUser, session: Session, db: Db, state: web::Data<AuthState>) -> Result<HttpResponse, AppError> {
    account_page(&req, user, &session, &db, &state, None, StatusCode::OK).await
}

async fn account_page(
    req: &HttpRequest,
    user: CurrentUser,
    session: &Session,
    db: &Db,
    state: &AuthState,
    problem: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, AppError> {
    let (user_id, now) = (user.0.id, state.clock.now());
    let mine = session.get::<String>(TOKEN).ok().flatten().map(|t| token_hash(&t));
    let (active, merchants) = db.run(move |conn| Ok::<_, diesel::result::Error>((repo::active_sessions(conn, user_id, now)?, repo::staff_of(conn, user_id)?))).await?;
    let sessions = active
        .into_iter()
        .map(|s| SessionView {
            this_one: mine.as_deref() == Some(s.token_hash.as_slice()),
            device: super::devices::describe(&s.user_agent),
            started: s.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        })
        .collect();
    let page = AccountPage { layout: Layout::new(req), name: user.0.name, email: user.0.email, sessions, merchants, problem };
    Ok(HttpResponse::build(status).content_type("text/html; charset=utf-8").body(page.render()?))
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    new_again: String,
}

/// Changes the password after checking the current one, and signs out every other device: if
/// someone else knew the old password, their session ends with it.
async fn change_password(req: HttpRequest, user: CurrentUser, session: Session, db: Db, state: web::Data<AuthState>, form: web::Form<PasswordForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let PasswordForm { current, new, new_again, .. } = form.into_inner();
    let problem = |why: &str| Some(why.to_string());
    let new = match NewPassword::parse(&new, &new_again) {
        Ok(new) => new,
        Err(e) => return account_page(&req, user, &session, &db, &state, problem(&e.to_string()), StatusCode::UNPROCESSABLE_ENTITY).await,
    };
    let user_id = user.0.id;
    let stored = db.run(move |conn| repo::password_hash(conn, user_id)).await?;
    let hashed = state
        .hashing
        .run(move || password::verify(&stored, &current).then(|| password::hash(&new.into_inner())))
        .await
        .map_err(|_| AppError::Unavailable("the password-hashing queue is full".into()))?;
    let Some(hash) = hashed else {
        return account_page(&req, user, &session, &db, &state, problem("Your current password was not right, so nothing changed."), StatusCode::UNPROCESSABLE_ENTITY).await;
    };
    let keep = session.get::<String>(TOKEN).ok().flatten().map(|t| token_hash(&t)).unwrap_or_default();
    let now = state.clock.now();
    let revoked = db
        .run(move |conn| {
            use diesel::Connection;
            conn.transaction(|conn| {
                repo::set_password_hash(conn, user_id, &hash)?;
                repo::void_bearer_tokens(conn, user_id, now)?;
                repo::revoke_other_sessions(conn, user_id, &keep, now)
            })
        })
        .await?;
    state.sessions.ended(&revoked).await;
    Ok(see_other_with_notice(&req, "/account", "Your password was changed. Every other device has been signed out."))
}

/// Ends every session of the account, on every device, this one included.
async fn sign_out_everywhere(user: CurrentUser, session: Session, db: Db, state: web::Data<AuthState>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let (user_id, now) = (user.0.id, state.clock.now());
    let revoked = db
        .run(move |conn| {
            use diesel::Connection;
            conn.transaction(|conn| {
                repo::void_bearer_tokens(conn, user_id, now)?;
                repo::revoke_all_sessions(conn, user_id, now)
            })
        })
        .await?;
    state.sessions.ended(&revoked).await;
    session.purge();
    Ok(see_other("/login"))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/signup", web::get().to(signup_page))
        .route("/signup", web::post().to(signup))
        .route("/account", web::get().to(account))
        .route("/account/password", web::post().to(change_password))
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
