//! The HTTP layer shared by every area: extractors, the server and its middleware, errors.
//! It knows no area: each area registers its own state and routes (mounted by `app.rs`), turns
//! its own errors into `AppError`, and auth tells it who is signed in through `Identify`.

pub mod caching;
pub mod csrf;
pub mod error;
pub mod middleware;
pub mod openapi;

use actix_session::config::PersistentSession;
use actix_session::storage::CookieSessionStore;
use actix_session::{SessionExt, SessionMiddleware};
use actix_web::cookie::{time::Duration as CookieDuration, Key, SameSite};
use actix_web::dev::{Payload, Server};
use actix_web::http::header;
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, FromRequest, HttpMessage, HttpRequest, HttpResponse, HttpServer};
use askama::Template;
use diesel::PgConnection;
use serde::{Deserialize, Serialize};
use std::future::{ready, Future, Ready};
use std::net::TcpListener;
use std::pin::Pin;
use std::sync::Arc;

use crate::cache::Cache;
use crate::db::{CountedConn, PgPool, QueryCounter};
pub use error::AppError;

/// Settings of the HTTP layer itself.
pub struct AppState {
    pub query_count_header: bool,
    /// Proxies in front of the app whose `X-Forwarded-For` entries are believed (see `client_ip`).
    pub trusted_proxy_hops: usize,
    /// Lets a scraper read `/metrics` with `Authorization: Bearer <token>` (`METRICS_TOKEN`).
    pub metrics_token: Option<String>,
    /// Set when this server is being stopped: `/readyz` answers 503 so the proxy sends it no new
    /// requests while it finishes the ones it holds.
    pub draining: Draining,
}

/// Whether this server is on its way out (SIGTERM): shared between the signal handler and
/// `/readyz`.
#[derive(Clone, Default)]
pub struct Draining(Arc<std::sync::atomic::AtomicBool>);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_on(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The address a request came from. Without trusted proxies it is the peer's address: a client
/// cannot choose it. Behind N proxies that each append the address they saw to
/// `X-Forwarded-For`, it is the Nth entry from the right — the one the outermost proxy wrote;
/// anything left of it was written by the client and is ignored.
pub fn client_ip(req: &HttpRequest) -> String {
    let peer = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_else(|| "unknown".into());
    let hops = req.app_data::<web::Data<AppState>>().map(|s| s.trusted_proxy_hops).unwrap_or(0);
    if hops == 0 {
        return peer;
    }
    let forwarded: Vec<String> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|a| a.trim().to_string())
        .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
        .collect();
    forwarded.len().checked_sub(hops).and_then(|i| forwarded.get(i).cloned()).unwrap_or(peer)
}

/// The signed-in person as pages need to know them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Viewer {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub is_admin: bool,
    /// Linked to at least one merchant when the session was looked up: the navigation offers
    /// the dashboard (whose pages check the links themselves on every request).
    #[serde(default)]
    pub is_staff: bool,
}

/// Who is on the other end of a request, put in its extensions before any handler runs.
#[derive(Debug, Clone)]
pub struct Visitor(pub Option<Viewer>);

impl Viewer {
    pub fn of(req: &HttpRequest) -> Option<Viewer> {
        req.extensions().get::<Visitor>().and_then(|v| v.0.clone())
    }
}

/// The session cookie's entry that holds a signed-in person's token.
pub const SESSION_TOKEN: &str = "sid";

/// What a session token turned out to be.
pub enum Identity {
    Known(Viewer),
    /// No such live session (revoked, expired, made up): the token is dropped from the cookie.
    Unknown,
    /// Nobody could say (the database is away): anonymous for this request, token kept.
    Unavailable(String),
}

/// Tells who holds a session token; registered as `web::Data<Arc<dyn Identify>>` by whoever
/// manages sessions (the auth area).
pub trait Identify: Send + Sync + 'static {
    fn identify(&self, token: String, counter: QueryCounter) -> Pin<Box<dyn Future<Output = Identity>>>;
}

/// What a request's `Authorization: Bearer` header turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bearer {
    /// No bearer token was sent.
    Absent,
    /// A live token of this user (by internal id).
    User(i64),
    /// A token was sent but is not one to accept: a stable code and a sentence for the caller.
    Refused { code: &'static str, message: String },
}

/// Tells whose API bearer token a request carries; registered as
/// `web::Data<Arc<dyn BearerHolder>>` by whoever issues the tokens (the merchants' API), so that
/// another area's API (chat) can know its caller without importing the one that issues them.
pub trait BearerHolder: Send + Sync + 'static {
    fn holder(&self, req: HttpRequest) -> Pin<Box<dyn Future<Output = Bearer>>>;
}

/// The request's bearer token's user, as the registered `BearerHolder` says (`Absent` when no
/// holder is registered or no token was sent).
pub async fn bearer(req: &HttpRequest) -> Bearer {
    if !req.headers().contains_key(header::AUTHORIZATION) {
        return Bearer::Absent;
    }
    match req.app_data::<web::Data<Arc<dyn BearerHolder>>>() {
        Some(holder) => holder.holder(req.clone()).await,
        None => Bearer::Absent,
    }
}

/// Database access for a handler: every query it runs is charged to the request's counter.
pub struct Db {
    pool: PgPool,
    counter: QueryCounter,
}

impl FromRequest for Db {
    type Error = AppError;
    type Future = Ready<Result<Db, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match req.app_data::<web::Data<PgPool>>() {
            Some(pool) => Ok(Db::on(pool.get_ref(), req)),
            None => Err(AppError::Internal("no database pool".into())),
        })
    }
}

impl Db {
    /// `pool`, its queries charged to the request's counter.
    fn on(pool: &PgPool, req: &HttpRequest) -> Db {
        let counter = req.extensions().get::<QueryCounter>().cloned().unwrap_or_default();
        Db { pool: pool.clone(), counter }
    }

    /// Runs blocking diesel work on the blocking thread pool with one pooled connection.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Into<AppError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let counter = self.counter.clone();
        web::block(move || {
            let mut conn = CountedConn::checkout(&pool, &counter)?;
            work(&mut conn).map_err(Into::into)
        })
        .await
        .map_err(|e| AppError::Internal(format!("blocking task: {e}")))?
    }
}

/// A streaming replica's pool (`DATABASE_READ_URL`), registered when there is one.
pub struct ReadPool(pub PgPool);

/// Database access for reads that may lag the primary by a moment (lists, totals, charts,
/// exports): the replica's pool when there is one, else the primary's. Nothing that decides
/// money or who may see what reads here. Queries count against the request as `Db`'s do.
pub struct ReadDb {
    db: Db,
    replica: bool,
}

impl FromRequest for ReadDb {
    type Error = AppError;
    type Future = Ready<Result<ReadDb, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        match req.app_data::<web::Data<ReadPool>>() {
            Some(read) => ready(Ok(ReadDb { db: Db::on(&read.0, req), replica: true })),
            None => ready(Db::from_request(req, payload).into_inner().map(|db| ReadDb { db, replica: false })),
        }
    }
}

impl ReadDb {
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Into<AppError> + Send + 'static,
    {
        self.db.run(work).await
    }

    /// Whether reads go to a replica (and so may be behind).
    pub fn is_replica(&self) -> bool {
        self.replica
    }

    /// The pool behind it, for work that streams outside a request's blocking task.
    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }
}

/// How far a replica's data is behind its primary, in seconds: 0 when it has replayed all it
/// received, else how long ago its last replayed transaction committed. `None` on a primary.
pub fn replica_lag(conn: &mut PgConnection) -> diesel::QueryResult<Option<f64>> {
    use diesel::RunQueryDsl;
    diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::Double>>(
        "SELECT CASE WHEN NOT pg_is_in_recovery() THEN NULL \
                     WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
                     ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END",
    )
    .get_result(conn)
}

/// What every page's frame needs: who is signed in, the token its forms carry, and a one-time
/// notice left by the request before (see [`flash`]).
pub struct Layout {
    pub user: Option<Viewer>,
    pub csrf: String,
    pub flash: Option<String>,
}

const FLASH_KEY: &str = "flash";

/// Leaves a notice for the next page this person sees ("Your comment was posted."), shown once:
/// reading it removes it, so a reload or a refresh does not repeat it.
pub fn flash(session: &actix_session::Session, notice: &str) {
    let _ = session.insert(FLASH_KEY, notice);
}

/// A redirect after a form, with a notice for the page it leads to. The notice travels in the
/// session, never in the address: a reload does not repeat it, and a crafted link cannot show one.
pub fn see_other_with_notice(req: &HttpRequest, location: &str, notice: &str) -> HttpResponse {
    flash(&req.get_session(), notice);
    see_other(location)
}

fn take_flash(req: &HttpRequest) -> Option<String> {
    let session = req.get_session();
    // Looked at before it is removed: removing marks the session changed even when there was
    // nothing to remove, and a changed session is encrypted and sent again on every page.
    let notice = session.get::<String>(FLASH_KEY).ok().flatten()?;
    session.remove(FLASH_KEY);
    Some(notice)
}

impl Layout {
    /// For pages whose forms are for signed-in people (and the sign-out button). An anonymous
    /// visitor gets no session and no cookie from such a page.
    pub fn new(req: &HttpRequest) -> Layout {
        let user = Viewer::of(req);
        let csrf = if user.is_some() { csrf::token(&req.get_session()) } else { String::new() };
        let flash = if user.is_some() { take_flash(req) } else { None };
        Layout { user, csrf, flash }
    }

    /// For pages with a form anyone may submit (signing in): a token even without a user.
    pub fn with_form(req: &HttpRequest) -> Layout {
        Layout { user: Viewer::of(req), csrf: csrf::token(&req.get_session()), flash: take_flash(req) }
    }

    /// Whether the person looking is an administrator (as their session says: for what a page
    /// shows; what a form may do is checked against the database by `AdminUser`).
    pub fn is_admin(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.is_admin)
    }

    /// The stylesheet's and the script's content-hashed paths (`caching::Asset`).
    pub fn css(&self) -> &'static str {
        caching::CSS.path()
    }

    pub fn js(&self) -> &'static str {
        caching::JS.path()
    }

    /// For error pages, which are rendered without the request at hand.
    pub fn bare() -> Layout {
        Layout { user: None, csrf: String::new(), flash: None }
    }
}

pub fn html(page: impl Template) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().content_type("text/html; charset=utf-8").body(page.render()?))
}

pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

/// Whether the client asked for JSON (a page's script, an API client) rather than a page.
pub fn wants_json(req: &HttpRequest) -> bool {
    req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/json"))
}

/// Percent-encodes a query-string value.
pub fn url_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Ids in paths are parsed here: anything that is not a positive integer is simply not found.
pub fn parse_id(raw: &str) -> Result<i64, AppError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or(AppError::NotFound)
}

async fn healthz(pool: web::Data<PgPool>, cache: web::Data<Cache>) -> HttpResponse {
    let pool = pool.get_ref().clone();
    let database = web::block(move || {
        use diesel::RunQueryDsl;
        let mut conn = pool.get().map_err(|e| e.to_string())?;
        diesel::sql_query("SELECT 1").execute(&mut conn).map(drop).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let redis = cache.ping().await;
    let body = serde_json::json!({
        "status": if database.is_ok() { "ok" } else { "unavailable" },
        "database": match &database { Ok(()) => "ok".to_string(), Err(e) => format!("down: {e}") },
        "redis": match &redis { Ok(()) => "ok".to_string(), Err(e) => format!("down: {e}") },
    });
    if database.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Readiness, for the proxy in front: 200 when this server should be sent requests — its
/// database answers, every migration it was built with is applied, and it is not draining. Redis
/// is reported but not required: without it the app is slower, not wrong, and taking every
/// server out of the proxy because Redis is away would turn a degraded site into a down one.
/// Liveness (`/healthz`) is separate.
async fn readyz(pool: web::Data<PgPool>, cache: web::Data<Cache>, state: web::Data<AppState>) -> HttpResponse {
    let pool = pool.get_ref().clone();
    let database = web::block(move || {
        let mut conn = pool.get().map_err(|e| e.to_string())?;
        crate::db::pending_migrations(&mut conn)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let redis = cache.ping().await;
    let draining = state.draining.is_on();
    let problem = match (&database, draining) {
        (_, true) => Some("draining".to_string()),
        (Err(e), _) => Some(format!("database down: {e}")),
        (Ok(pending), _) if *pending > 0 => Some(format!("{pending} migrations not applied")),
        _ => None,
    };
    let body = serde_json::json!({
        "ready": problem.is_none(),
        "problem": problem,
        "database": match &database { Ok(_) => "ok".to_string(), Err(e) => format!("down: {e}") },
        "migrations_pending": database.as_ref().ok(),
        "redis": match &redis { Ok(()) => "ok".to_string(), Err(e) => format!("down: {e}") },
        "draining": draining,
    });
    let mut response = if problem.is_none() { HttpResponse::Ok() } else { HttpResponse::ServiceUnavailable() };
    response.insert_header((header::CACHE_CONTROL, "no-store")).json(body)
}

/// The site's icon, where browsers look for it without being told (and where the pages' `<link>`
/// points): a day in caches.
async fn favicon() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/x-icon")
        .insert_header((header::CACHE_CONTROL, "public, max-age=86400"))
        .body(&include_bytes!("../../static/favicon.ico")[..])
}

async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound)
}

/// The routes of the HTTP layer itself; the areas' routes are mounted by `app.rs`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/static/{file}", web::get().to(caching::static_file))
        .route("/favicon.ico", web::get().to(favicon));
}

fn form_error(err: actix_web::error::UrlencodedError, _: &HttpRequest) -> actix_web::Error {
    AppError::BadRequest(format!("The form could not be read: {err}")).into()
}

/// Pending connections the kernel queues for the server. std's `TcpListener::bind` asks for 128;
/// a burst of a few hundred clients overflows that, and Linux then resets connections.
const LISTEN_BACKLOG: i32 = 1024;

/// A listening socket on `addr` (`host:port`, port 0 for any) with a backlog fit for bursts.
pub fn listen(addr: impl std::net::ToSocketAddrs) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on"))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    // Inherited by every accepted connection (Linux): a response written in pieces (compressed
    // pages are streamed) goes out at once instead of waiting on the client's delayed ACK, which
    // cost every compressed page 40 ms.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// No inline script, no plug-ins, no framing, forms only to this site. Inline `<style>` stays
/// allowed: the thread page's per-user style block is generated from numbers only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub struct ServerOptions {
    pub session_key: Key,
    /// Served over HTTPS: `Secure` cookies and HSTS.
    pub secure_cookies: bool,
    pub workers: Option<usize>,
    /// Registers the areas' state and routes (`app::mount`), once per server worker.
    pub mount: Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>,
    /// More routes beside the app's own (benchmarks mount their baselines here).
    pub extra_routes: Option<fn(&mut web::ServiceConfig)>,
}

pub fn server(listener: TcpListener, state: AppState, options: ServerOptions) -> std::io::Result<Server> {
    let state = web::Data::new(state);
    let ServerOptions { session_key, secure_cookies, workers, mount, extra_routes } = options;
    let mut server = HttpServer::new(move || {
        let sessions = SessionMiddleware::builder(CookieSessionStore::default(), session_key.clone())
            .cookie_name("agora_session".into())
            .cookie_secure(secure_cookies)
            .cookie_http_only(true)
            .cookie_same_site(SameSite::Lax)
            .session_lifecycle(PersistentSession::default().session_ttl(CookieDuration::days(7)))
            .build();
        let mut headers = DefaultHeaders::new()
            .add(("X-Content-Type-Options", "nosniff"))
            .add(("X-Frame-Options", "DENY"))
            .add(("Referrer-Policy", "same-origin"))
            .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY));
        if secure_cookies {
            headers = headers.add(("Strict-Transport-Security", "max-age=31536000; includeSubDomains"));
        }
        App::new()
            .app_data(state.clone())
            .app_data(web::FormConfig::default().limit(16 * 1024).error_handler(form_error))
            // Inside the session middleware (it reads the session), outside every handler.
            .wrap(from_fn(middleware::identify))
            // Outside `identify`, which makes a signed-in person's page `no-store`.
            .wrap(from_fn(caching::conditional))
            .wrap(sessions)
            .wrap(headers)
            // Brotli, zstd or gzip, as the client accepts.
            .wrap(actix_web::middleware::Compress::default())
            .wrap(from_fn(middleware::request_log))
            .configure(configure)
            .configure(|cfg| mount(cfg))
            .configure(|cfg| {
                if let Some(extra) = extra_routes {
                    extra(cfg)
                }
            })
            .default_service(web::to(not_found))
    })
    .listen(listener)?;
    if let Some(n) = workers {
        server = server.workers(n);
    }
    // Signals are the caller's to handle (`agora serve` drains before it stops, see `Draining`);
    // a stop waits up to 30 s for the requests in hand.
    Ok(server.disable_signals().shutdown_timeout(30).run())
}
