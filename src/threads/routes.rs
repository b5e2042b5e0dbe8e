//! Post pages with their discussion, and the forms that write to it.

use actix_session::SessionExt;
use std::borrow::Cow;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, web, HttpResponse};
use diesel::PgConnection;
use askama::Template;
use serde::Deserialize;

use super::cache::ThreadCache;
use crate::web::caching::Precompressed;
use std::sync::Arc;
use super::views::{CommentForm, DeletePage, MetricsPage, PostsPage, RootControls, SharedPage, ThreadHead, ThreadPage};
use super::render::{self, Frame};
use super::repo::{self, CommentRow};
use super::{tree, CommentBody, Refused, ThreadError, ThreadsState, MAX_DEPTH, PAGE_SIZE};
use crate::auth::{AdminUser, CurrentUser, SessionUser};
use crate::web::{csrf, html, parse_id, see_other, see_other_with_notice, wants_json, AppError, Db, Layout};




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

/// The head of a page, provided the post exists and `after` (if any) is one of its comments: a
/// cursor that points nowhere is not found, and no page is cached under it.
fn checked_head(conn: &mut PgConnection, post_id: i64, after: Option<&str>, from: &str, max_depth: i32) -> Result<repo::PageHead, AppError> {
    repo::page_head(conn, post_id, after.unwrap_or(""), from, max_depth, PAGE_SIZE)?.filter(|h| h.cursor_exists).ok_or(AppError::NotFound)
}

/// Loads (two queries), renders with whatever fragments the cache has, and stores what is new.
async fn build_page(db: &Db, threads: &ThreadCache, view: &View, after: Option<String>, cache_on: bool) -> Result<SharedPage, AppError> {
    let (mut head, rows, root) = match *view {
        View::Post { post_id } => {
            let after = after.clone();
            db.run(move |conn| {
                let head = checked_head(conn, post_id, after.as_deref(), "", MAX_DEPTH)?;
                let rows = repo::page(conn, post_id, after.as_deref(), MAX_DEPTH, PAGE_SIZE + 1)?;
                Ok::<_, AppError>((head, rows, None))
            })
            .await?
        }
        View::Subthread { post_id, comment_id } => {
            let after = after.clone();
            db.run(move |conn| {
                let root = repo::comment(conn, comment_id)?.filter(|c| c.post_id == post_id).ok_or(AppError::NotFound)?;
                let head = checked_head(conn, post_id, after.as_deref(), &root.path, root.depth + MAX_DEPTH)?;
                let rows = repo::subtree(conn, &root, after.as_deref(), root.depth + MAX_DEPTH, PAGE_SIZE + 1)?;
                Ok::<_, AppError>((head, rows, Some(root)))
            })
            .await?
        }
    };
    let root_depth = root.as_ref().map_or(0, |r| r.depth);
    let mut rows = rows;
    let more = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    let next = more.then(|| format!("{}?after={}", view.url(), rows.last().map(|r| r.path.as_str()).unwrap_or("")));
    let tree = tree::build(rows);
    let post = head.post;
    let frame = Frame { post_id: post.id, parents: std::mem::take(&mut head.ancestors), root_depth, max_depth: root_depth + MAX_DEPTH };
    let keys = render::fragment_keys(&tree, &frame);
    let cached = if cache_on { threads.fragments(&keys).await } else { vec![None; keys.len()] };
    let rendered = render::render(&tree, &frame, &keys, cached)?;
    threads.metrics.record_render(&rendered.rendered, rendered.hits);
    if cache_on {
        threads.store_fragments(&rendered.fresh).await;
    }
    // A subthread's head shows no post body.
    let body_html = if root.is_some() { Cow::Borrowed("") } else { super::markdown::shown(post.body_html.as_deref(), &post.body) };
    let head_html = ThreadHead { post: &post, body_html, root: root.as_ref() }.render()?;
    let mut comments = String::new();
    if after.is_some() {
        // Keyset pages have no numbers; the way back is the first page and the one before.
        let previous = match &head.previous {
            Some(cursor) => format!("{}?after={cursor}", view.url()),
            None => view.url(),
        };
        comments.push_str(&format!(
            "<nav class=\"pager\" aria-label=\"Earlier comments\"><a id=\"first-page\" href=\"{}\">« first page</a> <a id=\"previous-page\" href=\"{previous}\">‹ previous page</a></nav>",
            view.url()
        ));
    }
    comments.push_str(&rendered.html);
    if tree.rows.is_empty() && after.is_none() {
        comments.push_str("<p class=\"muted\" id=\"no-comments\">No comments yet.</p>");
    }
    if let Some(next) = next {
        comments.push_str(&format!("<p><a class=\"more\" id=\"more-comments\" href=\"{next}\">load more comments →</a></p>"));
    }
    let title = match &root {
        Some(root) => format!("{}'s comment · {}", root.author, post.shown_title()),
        None => post.shown_title().to_string(),
    };
    let root = root.filter(|r| !r.deleted).map(|r| (r.id, r.user_id));
    Ok(SharedPage { title, head: head_html, comments, root })
}

/// What differs per person on a shared page, as CSS over the cached fragments: reply links for
/// signed-in people, and the edit and delete links of your own discussion. (A comment's vote,
/// edit and delete controls are drawn by app.js from the thread's `data-me` and `data-voted`.)
fn user_style(user: Option<&SessionUser>) -> String {
    let Some(user) = user else { return String::new() };
    let me = user.id;
    format!(".comment .controls .reply-link {{ display: inline; }} .post[data-author=\"{me}\"] > .post-controls a {{ display: inline; }}")
}

async fn show(req: HttpRequest, view: View, after: Option<String>, db: Db, state: web::Data<ThreadsState>) -> Result<HttpResponse, AppError> {
    let threads = state.threads.clone();
    let post_id = view.post_id();
    // The version is read before the database: see threads::cache for why that keeps pages fresh.
    let key = view.cache_key(after.as_deref());
    let user = SessionUser::of(&req);
    if user.is_none() {
        if let Some(version) = threads.current_version(post_id).await {
            if let Some(page) = threads.visitor_pages.get(&key, &version) {
                threads.metrics.page_hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(page.respond(&req));
            }
        }
    }
    let lookup = threads.lookup(post_id, &key).await;
    let page = match lookup.page.and_then(|raw| SharedPage::decode(&raw)) {
        Some(page) => page,
        None => {
            let version = lookup.version.clone();
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
    let (form_action, form_label) = match view {
        View::Post { post_id } => (format!("/posts/{post_id}/comments"), "Add a comment"),
        View::Subthread { comment_id, .. } => (format!("/comments/{comment_id}/replies"), "Reply to this comment"),
    };
    let page = ThreadPage {
        user_style: user_style(user.as_ref()),
        me: user.as_ref().map(|u| u.id),
        voted: votes.iter().map(i64::to_string).collect::<Vec<_>>().join(" "),
        root_controls: user.as_ref().and_then(|u| page.root.map(|(id, author)| RootControls { id, mine: author == u.id, voted: votes.contains(&id) })),
        form_action,
        form_label,
        layout: Layout::new(&req),
        post_id,
        title: &page.title,
        head: &page.head,
        comments: &page.comments,
    }
    .render()?;
    // The same for every visitor: kept whole and compressed, under the version read first.
    match (user, lookup.version) {
        (None, Some(version)) => {
            let kept = Arc::new(Precompressed::new(page));
            threads.visitor_pages.keep(key, version, kept.clone());
            Ok(kept.respond(&req))
        }
        _ => Ok(crate::web::caching::public(HttpResponse::Ok().content_type("text/html; charset=utf-8").body(page))),
    }
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


async fn posts(req: HttpRequest, db: Db) -> Result<HttpResponse, AppError> {
    let posts = db.run(|conn| repo::recent_posts(conn, 50)).await?;
    html(PostsPage { layout: Layout::new(&req), posts }).map(crate::web::caching::public)
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

    /// The form, empty or holding `body`; with a problem (see `Refused`) it says what is wrong,
    /// with the problem's status.
    fn page(self, req: &HttpRequest, body: String, problem: Option<Refused>) -> Result<HttpResponse, AppError> {
        let (problem, status) = match problem {
            Some(Refused { problem, status }) => (Some(problem), status),
            None => (None, StatusCode::OK),
        };
        let form = CommentForm {
            layout: Layout::new(req),
            heading: self.heading,
            action: self.action,
            cancel: self.cancel,
            quoted: self.quoted,
            body,
            problem,
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

/// The page where a comment is seen, scrolled to it: the post's page (or, below `MAX_DEPTH`, the
/// subthread that "continue this thread" leads to) that holds it, found the way its pages are
/// chained. Without this a new comment on a long thread lands on page 1 and seems to vanish.
fn landing(conn: &mut PgConnection, comment: &repo::Placed) -> Result<String, ThreadError> {
    let post_id = comment.post_id;
    let (base, from, max_depth) = if comment.depth <= MAX_DEPTH {
        (format!("/posts/{post_id}"), String::new(), MAX_DEPTH)
    } else {
        // Subthreads start at depths MAX_DEPTH, 2 × MAX_DEPTH, …: the one above this comment.
        let root_depth = MAX_DEPTH * ((comment.depth - 1) / MAX_DEPTH);
        let segments: Vec<&str> = comment.path.split('.').collect();
        let root_path = segments[..=root_depth as usize].join(".");
        let root_id: i64 = segments[root_depth as usize].parse().map_err(|_| ThreadError::NotFound)?;
        (format!("/posts/{post_id}/comments/{root_id}"), root_path, root_depth + MAX_DEPTH)
    };
    let cursor = repo::cursor_of_page_holding(conn, post_id, &from, max_depth, &comment.path, PAGE_SIZE)?;
    Ok(match cursor {
        Some(cursor) => format!("{base}?after={cursor}#c{}", comment.id),
        None => format!("{base}#c{}", comment.id),
    })
}

/// What a new comment answers.
#[derive(Clone, Copy)]
enum Target {
    Post(i64),
    Comment(i64),
}

impl Target {
    async fn form(self, db: &Db) -> Result<FormPurpose, AppError> {
        Ok(match self {
            Target::Post(post_id) => FormPurpose::comment_on(post_id),
            Target::Comment(id) => FormPurpose::reply(&db.run(move |conn| live_comment(conn, id)).await?),
        })
    }
}

/// Said when a form's token no longer matches (signed in again in another tab, say): the form
/// comes back with the text kept and a fresh token, rather than an error page that loses it.
/// The body of a comment form, provided its token is this session's and the body parses.
fn accepted_body(req: &HttpRequest, form: &BodyForm) -> Result<CommentBody, Refused> {
    csrf::verify(&req.get_session(), &form.csrf_token).map_err(|_| Refused::expired())?;
    CommentBody::parse(&form.body).map_err(Refused::invalid)
}

async fn add(user: CurrentUser, req: HttpRequest, db: Db, state: web::Data<ThreadsState>, target: Target, form: BodyForm) -> Result<HttpResponse, AppError> {
    let body = match accepted_body(&req, &form) {
        Ok(body) => body,
        Err(refused) => return target.form(&db).await?.page(&req, form.body, Some(refused)),
    };
    let user_id = user.0.id;
    let (post_id, location) = db
        .run(move |conn| {
            let (post_id, parent_id) = match target {
                Target::Post(post_id) => (post_id, None),
                Target::Comment(id) => {
                    let parent = live_comment(conn, id)?;
                    (parent.post_id, Some(parent.id))
                }
            };
            let placed = repo::add_comment(conn, post_id, parent_id, user_id, &body)?.ok_or(ThreadError::NotFound)?;
            Ok::<_, ThreadError>((post_id, landing(conn, &placed)?))
        })
        .await?;
    state.threads.bump(post_id).await;
    Ok(see_other_with_notice(&req, &location, "Your comment was posted."))
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
    let (id, user_id) = (parse_id(&path)?, user.0.id);
    let body = match accepted_body(&req, &form) {
        Ok(body) => body,
        Err(refused) => {
            let comment = db.run(move |conn| own_comment(conn, id, user_id)).await?;
            return FormPurpose::edit(&comment).page(&req, form.into_inner().body, Some(refused));
        }
    };
    let now = state.clock.now();
    let (post_id, location) = db
        .run(move |conn| {
            let placed = repo::edit_comment(conn, id, user_id, &body, now)?.ok_or(ThreadError::NotFound)?;
            Ok::<_, ThreadError>((placed.post_id, landing(conn, &placed)?))
        })
        .await?;
    state.threads.bump(post_id).await;
    Ok(see_other_with_notice(&req, &location, "Your comment was saved."))
}

/// Upvotes (`up`) or takes the vote back. The page's script asks for JSON and updates the count
/// in place; without script the form posts and the page comes back at the comment.
async fn vote(req: HttpRequest, user: CurrentUser, db: Db, state: web::Data<ThreadsState>, id: &str, form: csrf::TokenForm, up: bool) -> Result<HttpResponse, AppError> {
    csrf::verify(&req.get_session(), &form.csrf_token)?;
    let id = parse_id(id)?;
    let user_id = user.0.id;
    let json = wants_json(&req);
    let (result, location) = db
        .run(move |conn| {
            let result = repo::vote(conn, id, user_id, up)?.ok_or(ThreadError::NotFound)?;
            // The script stays on its page; only a form post needs to be sent back to the comment.
            let location = if json { String::new() } else { landing(conn, &result.comment)? };
            Ok::<_, ThreadError>((result, location))
        })
        .await?;
    let post_id = result.comment.post_id;
    if result.outcome == repo::Voted::Changed {
        state.threads.forget_votes(post_id, user_id).await;
        state.threads.bump(post_id).await;
    }
    let own = result.outcome == repo::Voted::OwnComment;
    if json {
        let body = serde_json::json!({ "comment": id, "points": result.points, "voted": up && !own });
        return Ok(if own {
            HttpResponse::UnprocessableEntity().json(serde_json::json!({ "error": "You cannot vote for your own comment." }))
        } else {
            HttpResponse::Ok().json(body)
        });
    }
    Ok(if own { see_other_with_notice(&req, &location, "You cannot vote for your own comment.") } else { see_other(&location) })
}

async fn upvote(req: HttpRequest, user: CurrentUser, db: Db, state: web::Data<ThreadsState>, path: web::Path<String>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    vote(req, user, db, state, &path, form.into_inner(), true).await
}

async fn unvote(req: HttpRequest, user: CurrentUser, db: Db, state: web::Data<ThreadsState>, path: web::Path<String>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    vote(req, user, db, state, &path, form.into_inner(), false).await
}


/// Asks before deleting: what goes, and that the replies stay.
async fn delete_form(req: HttpRequest, user: CurrentUser, db: Db, path: web::Path<String>) -> Result<HttpResponse, AppError> {
    let (id, user_id) = (parse_id(&path)?, user.0.id);
    let comment = db.run(move |conn| own_comment(conn, id, user_id)).await?;
    html(DeletePage { layout: Layout::new(&req), comment })
}

async fn delete(req: HttpRequest, user: CurrentUser, db: Db, state: web::Data<ThreadsState>, path: web::Path<String>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&req.get_session(), &form.csrf_token)?;
    let id = parse_id(&path)?;
    let (user_id, now) = (user.0.id, state.clock.now());
    let (post_id, location) = db
        .run(move |conn| {
            let placed = repo::delete_comment(conn, id, user_id, now)?.ok_or(ThreadError::NotFound)?;
            Ok::<_, ThreadError>((placed.post_id, landing(conn, &placed)?))
        })
        .await?;
    state.threads.bump(post_id).await;
    Ok(see_other_with_notice(&req, &location, "Your comment was deleted. Replies to it stay."))
}


async fn metrics_page(req: HttpRequest, _admin: AdminUser, state: web::Data<ThreadsState>) -> Result<HttpResponse, AppError> {
    html(MetricsPage { layout: Layout::new(&req), m: state.threads.metrics.snapshot() })
}

async fn metrics_json(_admin: AdminUser, state: web::Data<ThreadsState>) -> HttpResponse {
    HttpResponse::Ok().json(state.threads.metrics.snapshot())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/posts", web::get().to(posts))
        // Before `/posts/{id}`, which would otherwise take "new" for an id.
        .route("/posts/new", web::get().to(super::discussions::new_post_form))
        .route("/posts/{id}", web::get().to(post_page))
        .route("/posts/{id}/comments", web::post().to(add_to_post))
        .route("/posts/{post}/comments/{comment}", web::get().to(subthread_page))
        .route("/comments/{id}/reply", web::get().to(reply_form))
        .route("/comments/{id}/replies", web::post().to(add_reply))
        .route("/comments/{id}/edit", web::get().to(edit_form))
        .route("/comments/{id}/edit", web::post().to(edit))
        .route("/comments/{id}/upvote", web::post().to(upvote))
        .route("/comments/{id}/unvote", web::post().to(unvote))
        .route("/comments/{id}/delete", web::get().to(delete_form))
        .route("/comments/{id}/delete", web::post().to(delete))
        .route("/posts", web::post().to(super::discussions::create_post))
        .route("/posts/{id}/edit", web::get().to(super::discussions::edit_post_form))
        .route("/posts/{id}/edit", web::post().to(super::discussions::edit_post))
        .route("/posts/{id}/delete", web::get().to(super::discussions::delete_post_form))
        .route("/posts/{id}/delete", web::post().to(super::discussions::delete_post))
        .route("/admin/cache", web::get().to(metrics_page))
        .route("/admin/cache.json", web::get().to(metrics_json));
}
