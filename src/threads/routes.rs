//! Post pages with their discussion, and the forms that write to it.

use actix_session::{Session, SessionExt};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, web, HttpResponse};
use diesel::PgConnection;
use askama::Template;
use serde::Deserialize;

use super::cache::ThreadCache;
use super::render::{self, Frame};
use super::repo::{self, CommentRow, PostRow};
use super::{tree, BodyError, CommentBody, ThreadError, ThreadsState, MAX_DEPTH, PAGE_SIZE};
use crate::auth::{AdminUser, CurrentUser, SessionUser};
use crate::web::{csrf, html, parse_id, see_other, AppError, Db, Layout};

#[derive(Template)]
#[template(path = "thread_head.html")]
struct ThreadHead<'a> {
    post: &'a PostRow,
    /// Set on a "continue this thread" page.
    context: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "thread.html")]
struct ThreadPage<'a> {
    layout: Layout,
    post_id: i64,
    title: &'a str,
    head: &'a str,
    comments: &'a str,
    /// Per-user presentation (which edit links and votes are yours), kept out of shared fragments.
    user_style: String,
}

/// What is cached for a page: the same for everyone who sees it.
struct SharedPage {
    title: String,
    head: String,
    comments: String,
}

impl SharedPage {
    fn encode(&self) -> String {
        format!("{}\u{0}{}\u{0}{}", self.title, self.head, self.comments)
    }

    fn decode(raw: &str) -> Option<SharedPage> {
        let mut parts = raw.splitn(3, '\u{0}');
        Some(SharedPage { title: parts.next()?.into(), head: parts.next()?.into(), comments: parts.next()?.into() })
    }
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<String>,
}

/// A page cursor is a comment's path, written exactly as the database writes it: ids of twelve
/// digits joined by dots. Any other spelling (`00`, `1`, `0001`) is not found, so one page cannot
/// be cached under many keys.
fn cursor(after: &Option<String>) -> Result<Option<String>, AppError> {
    let Some(after) = after else { return Ok(None) };
    let canonical = after.len() <= 13 * 256
        && after.split('.').all(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) && id != "000000000000");
    if canonical {
        Ok(Some(after.clone()))
    } else {
        Err(AppError::NotFound)
    }
}

/// What the page is a view of.
enum View {
    Post { post_id: i64 },
    Subthread { post_id: i64, comment_id: i64 },
}

impl View {
    fn post_id(&self) -> i64 {
        match self {
            View::Post { post_id } | View::Subthread { post_id, .. } => *post_id,
        }
    }

    fn cache_key(&self, after: Option<&str>) -> String {
        let after = after.unwrap_or("-");
        match self {
            View::Post { post_id } => format!("page:{post_id}:{after}"),
            View::Subthread { post_id, comment_id } => format!("page:{post_id}:c{comment_id}:{after}"),
        }
    }

    fn url(&self) -> String {
        match self {
            View::Post { post_id } => format!("/posts/{post_id}"),
            View::Subthread { post_id, comment_id } => format!("/posts/{post_id}/comments/{comment_id}"),
        }
    }
}

/// The post, provided it exists and `after` (if any) is one of its comments: a cursor that points
/// nowhere is not found, and no page is cached under it.
fn post_with_cursor(conn: &mut PgConnection, post_id: i64, after: Option<&str>) -> Result<PostRow, AppError> {
    match repo::post_at_cursor(conn, post_id, after.unwrap_or(""))? {
        Some((post, cursor_exists)) if cursor_exists || after.is_none() => Ok(post),
        _ => Err(AppError::NotFound),
    }
}

/// Loads (two queries), renders with whatever fragments the cache has, and stores what is new.
async fn build_page(db: &Db, threads: &ThreadCache, view: &View, after: Option<String>, cache_on: bool) -> Result<SharedPage, AppError> {
    let (post, rows, root_depth) = match *view {
        View::Post { post_id } => {
            let after = after.clone();
            db.run(move |conn| {
                let post = post_with_cursor(conn, post_id, after.as_deref())?;
                let rows = repo::page(conn, post_id, after.as_deref(), MAX_DEPTH, PAGE_SIZE + 1)?;
                Ok::<_, AppError>((post, rows, 0))
            })
            .await?
        }
        View::Subthread { post_id, comment_id } => {
            let after = after.clone();
            db.run(move |conn| {
                let root = repo::comment(conn, comment_id)?.filter(|c| c.post_id == post_id).ok_or(AppError::NotFound)?;
                let post = post_with_cursor(conn, post_id, after.as_deref())?;
                let rows = repo::subtree(conn, &root, after.as_deref(), root.depth + MAX_DEPTH, PAGE_SIZE + 1)?;
                Ok::<_, AppError>((post, rows, root.depth))
            })
            .await?
        }
    };
    let mut rows = rows;
    let more = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    let next = more.then(|| format!("{}?after={}", view.url(), rows.last().map(|r| r.path.as_str()).unwrap_or("")));
    let tree = tree::build(rows);
    let frame = Frame { post_id: post.id, max_depth: root_depth + MAX_DEPTH };
    let keys = render::fragment_keys(&tree, &frame);
    let cached = if cache_on { threads.fragments(&keys).await } else { vec![None; keys.len()] };
    let rendered = render::render(&tree, &frame, &keys, cached)?;
    threads.metrics.record_render(&rendered.rendered, rendered.hits);
    if cache_on {
        threads.store_fragments(&rendered.fresh).await;
    }
    let context = matches!(view, View::Subthread { .. }).then_some("Continuing a thread from");
    let head = ThreadHead { post: &post, context }.render()?;
    let mut comments = rendered.html;
    if tree.rows.is_empty() && after.is_none() {
        comments.push_str("<p class=\"muted\" id=\"no-comments\">No comments yet.</p>");
    }
    if let Some(next) = next {
        comments.push_str(&format!("<p><a class=\"more\" id=\"more-comments\" href=\"{next}\">load more comments →</a></p>"));
    }
    Ok(SharedPage { title: post.title, head, comments })
}

fn user_style(user: Option<&SessionUser>, votes: &[i64]) -> String {
    let Some(user) = user else { return String::new() };
    let mut style = format!(
        ".comment .controls {{ display: flex; }} .comment[data-author=\"{}\"] > .controls .edit-link {{ display: inline; }}",
        user.id
    );
    for id in votes {
        style.push_str(&format!(" .vote[data-comment=\"{id}\"]"));
        style.push(',');
    }
    if !votes.is_empty() {
        style.pop();
        style.push_str(" { color: var(--accent); font-weight: 700; }");
    }
    style
}

async fn show(req: HttpRequest, view: View, after: Option<String>, db: Db, state: web::Data<ThreadsState>) -> Result<HttpResponse, AppError> {
    let threads = state.threads.clone();
    let post_id = view.post_id();
    // The version is read before the database: see threads::cache for why that keeps pages fresh.
    let key = view.cache_key(after.as_deref());
    let lookup = threads.lookup(post_id, &key).await;
    let page = match lookup.page.and_then(|raw| SharedPage::decode(&raw)) {
        Some(page) => page,
        None => {
            let version = lookup.version;
            let page = match build_page(&db, &threads, &view, after, version.is_some()).await {
                Ok(page) => page,
                Err(e) => {
                    if lookup.fresh {
                        threads.forget_version(post_id).await;
                    }
                    return Err(e);
                }
            };
            if let Some(version) = &version {
                threads.store_page(&key, version, &page.encode()).await;
            }
            page
        }
    };
    let user = SessionUser::of(&req);
    let votes = match &user {
        Some(user) => match threads.votes(post_id, user.id).await {
            Some(votes) => votes,
            None => {
                let user_id = user.id;
                let votes = db.run(move |conn| repo::votes_of(conn, post_id, user_id)).await?;
                threads.store_votes(post_id, user_id, &votes).await;
                votes
            }
        },
        None => Vec::new(),
    };
    html(ThreadPage {
        user_style: user_style(user.as_ref(), &votes),
        layout: Layout::new(&req),
        post_id,
        title: &page.title,
        head: &page.head,
        comments: &page.comments,
    })
}

async fn post_page(req: HttpRequest, db: Db, state: web::Data<ThreadsState>, path: web::Path<String>, query: web::Query<PageQuery>) -> Result<HttpResponse, AppError> {
    let view = View::Post { post_id: parse_id(&path)? };
    show(req, view, cursor(&query.after)?, db, state).await
}

async fn subthread_page(
    req: HttpRequest,
    db: Db,
    state: web::Data<ThreadsState>,
    path: web::Path<(String, String)>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, AppError> {
    let view = View::Subthread { post_id: parse_id(&path.0)?, comment_id: parse_id(&path.1)? };
    show(req, view, cursor(&query.after)?, db, state).await
}

#[derive(Template)]
#[template(path = "posts.html")]
struct PostsPage {
    layout: Layout,
    posts: Vec<PostRow>,
}

async fn posts(req: HttpRequest, db: Db) -> Result<HttpResponse, AppError> {
    let posts = db.run(|conn| repo::recent_posts(conn, 50)).await?;
    html(PostsPage { layout: Layout::new(&req), posts })
}

#[derive(Template)]
#[template(path = "comment_form.html")]
struct CommentForm {
    layout: Layout,
    heading: String,
    action: String,
    cancel: String,
    quoted: Option<(String, String)>,
    body: String,
    problem: Option<String>,
    submit: &'static str,
}

/// What a comment form is for: the parts that do not change when it is shown again with a problem.
struct FormPurpose {
    heading: String,
    action: String,
    cancel: String,
    quoted: Option<(String, String)>,
    submit: &'static str,
}

impl FormPurpose {
    fn reply(parent: &CommentRow) -> FormPurpose {
        FormPurpose {
            heading: format!("Reply to {}", parent.author),
            action: format!("/comments/{}/replies", parent.id),
            cancel: format!("/posts/{}#c{}", parent.post_id, parent.id),
            quoted: Some((parent.author.clone(), parent.body.clone())),
            submit: "Post reply",
        }
    }

    fn comment_on(post_id: i64) -> FormPurpose {
        FormPurpose {
            heading: "Your comment".into(),
            action: format!("/posts/{post_id}/comments"),
            cancel: format!("/posts/{post_id}"),
            quoted: None,
            submit: "Post",
        }
    }

    fn edit(comment: &CommentRow) -> FormPurpose {
        FormPurpose {
            heading: "Edit your comment".into(),
            action: format!("/comments/{}/edit", comment.id),
            cancel: format!("/posts/{}#c{}", comment.post_id, comment.id),
            quoted: None,
            submit: "Save",
        }
    }

    /// The form, empty or holding `body`; with a problem it answers 422 and says what is wrong.
    fn page(self, req: &HttpRequest, body: String, problem: Option<BodyError>) -> Result<HttpResponse, AppError> {
        let status = if problem.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
        let form = CommentForm {
            layout: Layout::new(req),
            heading: self.heading,
            action: self.action,
            cancel: self.cancel,
            quoted: self.quoted,
            body,
            problem: problem.map(|p| p.to_string()),
            submit: self.submit,
        };
        Ok(HttpResponse::build(status).content_type("text/html; charset=utf-8").body(form.render()?))
    }
}

#[derive(Deserialize)]
struct BodyForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    body: String,
}

/// A comment that can be answered or edited: it exists and is not deleted.
fn live_comment(conn: &mut PgConnection, id: i64) -> Result<CommentRow, ThreadError> {
    repo::comment(conn, id)?.filter(|c| !c.deleted).ok_or(ThreadError::NotFound)
}

async fn reply_form(req: HttpRequest, _user: CurrentUser, db: Db, path: web::Path<String>) -> Result<HttpResponse, AppError> {
    let id = parse_id(&path)?;
    let parent = db.run(move |conn| live_comment(conn, id)).await?;
    FormPurpose::reply(&parent).page(&req, String::new(), None)
}

/// Where to look at a comment after writing it: its post, or its subthread when it is deep.
fn comment_url(post_id: i64, comment_id: i64, parent: Option<&CommentRow>) -> String {
    match parent {
        Some(parent) if parent.depth + 1 > MAX_DEPTH => format!("/posts/{post_id}/comments/{}#c{comment_id}", parent.id),
        _ => format!("/posts/{post_id}#c{comment_id}"),
    }
}

/// What a new comment answers.
#[derive(Clone, Copy)]
enum Target {
    Post(i64),
    Comment(i64),
}

async fn add(user: CurrentUser, req: HttpRequest, db: Db, state: web::Data<ThreadsState>, target: Target, form: BodyForm) -> Result<HttpResponse, AppError> {
    csrf::verify(&req.get_session(), &form.csrf_token)?;
    let body = match CommentBody::parse(&form.body) {
        Ok(body) => body,
        Err(problem) => {
            let purpose = match target {
                Target::Post(post_id) => FormPurpose::comment_on(post_id),
                Target::Comment(id) => FormPurpose::reply(&db.run(move |conn| live_comment(conn, id)).await?),
            };
            return purpose.page(&req, form.body, Some(problem));
        }
    };
    let user_id = user.0.id;
    let (post_id, id, parent) = db
        .run(move |conn| {
            let (post_id, parent) = match target {
                Target::Post(post_id) => (post_id, None),
                Target::Comment(id) => {
                    let parent = live_comment(conn, id)?;
                    (parent.post_id, Some(parent))
                }
            };
            let parent_id = parent.as_ref().map(|p| p.id);
            let id = repo::add_comment(conn, post_id, parent_id, user_id, &body)?.ok_or(ThreadError::NotFound)?;
            Ok::<_, ThreadError>((post_id, id, parent))
        })
        .await?;
    state.threads.bump(post_id).await;
    Ok(see_other(&comment_url(post_id, id, parent.as_ref())))
}

async fn add_to_post(user: CurrentUser, req: HttpRequest, db: Db, state: web::Data<ThreadsState>, path: web::Path<String>, form: web::Form<BodyForm>) -> Result<HttpResponse, AppError> {
    let target = Target::Post(parse_id(&path)?);
    add(user, req, db, state, target, form.into_inner()).await
}

async fn add_reply(user: CurrentUser, req: HttpRequest, db: Db, state: web::Data<ThreadsState>, path: web::Path<String>, form: web::Form<BodyForm>) -> Result<HttpResponse, AppError> {
    let target = Target::Comment(parse_id(&path)?);
    add(user, req, db, state, target, form.into_inner()).await
}

/// The author's own live comment; anyone else's is not found.
fn own_comment(conn: &mut PgConnection, id: i64, user_id: i64) -> Result<CommentRow, ThreadError> {
    Some(live_comment(conn, id)?).filter(|c| c.user_id == user_id).ok_or(ThreadError::NotFound)
}

async fn edit_form(req: HttpRequest, user: CurrentUser, db: Db, path: web::Path<String>) -> Result<HttpResponse, AppError> {
    let (id, user_id) = (parse_id(&path)?, user.0.id);
    let comment = db.run(move |conn| own_comment(conn, id, user_id)).await?;
    let body = comment.body.clone();
    FormPurpose::edit(&comment).page(&req, body, None)
}

async fn edit(user: CurrentUser, req: HttpRequest, db: Db, state: web::Data<ThreadsState>, path: web::Path<String>, form: web::Form<BodyForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&req.get_session(), &form.csrf_token)?;
    let (id, user_id) = (parse_id(&path)?, user.0.id);
    let body = match CommentBody::parse(&form.body) {
        Ok(body) => body,
        Err(problem) => {
            let comment = db.run(move |conn| own_comment(conn, id, user_id)).await?;
            return FormPurpose::edit(&comment).page(&req, form.into_inner().body, Some(problem));
        }
    };
    let now = state.clock.now();
    let post_id = db.run(move |conn| repo::edit_comment(conn, id, user_id, &body, now)?.ok_or(ThreadError::NotFound)).await?;
    state.threads.bump(post_id).await;
    Ok(see_other(&format!("/posts/{post_id}#c{id}")))
}

async fn upvote(user: CurrentUser, session: Session, db: Db, state: web::Data<ThreadsState>, path: web::Path<String>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let id = parse_id(&path)?;
    let user_id = user.0.id;
    let (post_id, counted) = db.run(move |conn| repo::upvote(conn, id, user_id)?.ok_or(AppError::NotFound)).await?;
    if counted {
        state.threads.forget_votes(post_id, user_id).await;
        state.threads.bump(post_id).await;
    }
    Ok(see_other(&format!("/posts/{post_id}#c{id}")))
}

async fn delete(user: CurrentUser, session: Session, db: Db, state: web::Data<ThreadsState>, path: web::Path<String>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let id = parse_id(&path)?;
    let (user_id, now) = (user.0.id, state.clock.now());
    let post_id = db.run(move |conn| repo::delete_comment(conn, id, user_id, now)?.ok_or(ThreadError::NotFound)).await?;
    state.threads.bump(post_id).await;
    Ok(see_other(&format!("/posts/{post_id}#c{id}")))
}

#[derive(Template)]
#[template(path = "cache_metrics.html")]
struct MetricsPage {
    layout: Layout,
    m: super::cache::MetricsSnapshot,
}

async fn metrics_page(req: HttpRequest, _admin: AdminUser, state: web::Data<ThreadsState>) -> Result<HttpResponse, AppError> {
    html(MetricsPage { layout: Layout::new(&req), m: state.threads.metrics.snapshot() })
}

async fn metrics_json(_admin: AdminUser, state: web::Data<ThreadsState>) -> HttpResponse {
    HttpResponse::Ok().json(state.threads.metrics.snapshot())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/posts", web::get().to(posts))
        .route("/posts/{id}", web::get().to(post_page))
        .route("/posts/{id}/comments", web::post().to(add_to_post))
        .route("/posts/{post}/comments/{comment}", web::get().to(subthread_page))
        .route("/comments/{id}/reply", web::get().to(reply_form))
        .route("/comments/{id}/replies", web::post().to(add_reply))
        .route("/comments/{id}/edit", web::get().to(edit_form))
        .route("/comments/{id}/edit", web::post().to(edit))
        .route("/comments/{id}/upvote", web::post().to(upvote))
        .route("/comments/{id}/delete", web::post().to(delete))
        .route("/admin/cache", web::get().to(metrics_page))
        .route("/admin/cache.json", web::get().to(metrics_json));
}
