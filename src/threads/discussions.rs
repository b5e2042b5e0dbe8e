//! A discussion's own life: started, edited and deleted by its author. Deleting keeps the replies
//! (as a deleted comment does): the title and text go, the thread stays readable.

use actix_session::SessionExt;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::repo;
use super::views::{NewPostPage, PostDeletePage};
use super::{CommentBody, PostTitle, Refused, ThreadsState};
use crate::auth::CurrentUser;
use crate::web::{csrf, html, parse_id, see_other_with_notice, AppError, Db, Layout};

#[derive(Deserialize)]
pub(super) struct PostForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
}

/// The form's title and body, provided its token is this session's and both parse.
fn accepted(req: &HttpRequest, form: &PostForm) -> Result<(PostTitle, CommentBody), Refused> {
    csrf::verify(&req.get_session(), &form.csrf_token).map_err(|_| Refused::expired())?;
    Ok((PostTitle::parse(&form.title).map_err(Refused::invalid)?, CommentBody::parse(&form.body).map_err(Refused::invalid)?))
}

/// The form again, with what was typed and what is wrong with it.
fn again(req: &HttpRequest, editing: Option<i64>, form: PostForm, refused: Refused) -> Result<HttpResponse, AppError> {
    let page = NewPostPage { layout: Layout::new(req), editing, title: form.title, body: form.body, problem: Some(refused.problem) };
    Ok(HttpResponse::build(refused.status).content_type("text/html; charset=utf-8").body(page.render()?))
}

pub(super) async fn new_post_form(req: HttpRequest, _user: CurrentUser) -> Result<HttpResponse, AppError> {
    html(NewPostPage { layout: Layout::new(&req), editing: None, title: String::new(), body: String::new(), problem: None })
}

/// Starts a discussion. A problem (or an expired form) shows the form again with what was typed.
pub(super) async fn create_post(req: HttpRequest, user: CurrentUser, db: Db, form: web::Form<PostForm>) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    let (title, body) = match accepted(&req, &form) {
        Ok(accepted) => accepted,
        Err(refused) => return again(&req, None, form, refused),
    };
    let user_id = user.0.id;
    let post_id = db.run(move |conn| repo::create_post(conn, user_id, title.as_str(), &body)).await?;
    Ok(see_other_with_notice(&req, &format!("/posts/{post_id}"), "Your discussion is open."))
}

/// The author's own discussion (not deleted); anyone else's is not found.
async fn own_post(db: &Db, post_id: i64, user_id: i64) -> Result<repo::PostRow, AppError> {
    let post = db.run(move |conn| repo::post(conn, post_id)).await?;
    post.filter(|p| p.user_id == user_id && !p.deleted).ok_or(AppError::NotFound)
}

pub(super) async fn edit_post_form(req: HttpRequest, user: CurrentUser, db: Db, path: web::Path<String>) -> Result<HttpResponse, AppError> {
    let post_id = parse_id(&path)?;
    let post = own_post(&db, post_id, user.0.id).await?;
    html(NewPostPage { layout: Layout::new(&req), editing: Some(post_id), title: post.title, body: post.body, problem: None })
}

pub(super) async fn edit_post(
    req: HttpRequest,
    user: CurrentUser,
    db: Db,
    state: web::Data<ThreadsState>,
    path: web::Path<String>,
    form: web::Form<PostForm>,
) -> Result<HttpResponse, AppError> {
    let post_id = parse_id(&path)?;
    let form = form.into_inner();
    let (title, body) = match accepted(&req, &form) {
        Ok(accepted) => accepted,
        Err(refused) => return again(&req, Some(post_id), form, refused),
    };
    let (user_id, now) = (user.0.id, state.clock.now());
    let changed = db.run(move |conn| repo::update_post(conn, post_id, user_id, title.as_str(), &body, now)).await?;
    if !changed {
        return Err(AppError::NotFound);
    }
    state.threads.bump(post_id).await;
    Ok(see_other_with_notice(&req, &format!("/posts/{post_id}"), "Your discussion was updated."))
}

/// Asks before deleting: what goes, and that the replies stay.
pub(super) async fn delete_post_form(req: HttpRequest, user: CurrentUser, db: Db, path: web::Path<String>) -> Result<HttpResponse, AppError> {
    let post = own_post(&db, parse_id(&path)?, user.0.id).await?;
    html(PostDeletePage { layout: Layout::new(&req), post })
}

pub(super) async fn delete_post(
    req: HttpRequest,
    user: CurrentUser,
    db: Db,
    state: web::Data<ThreadsState>,
    path: web::Path<String>,
    form: web::Form<csrf::TokenForm>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&req.get_session(), &form.csrf_token)?;
    let post_id = parse_id(&path)?;
    let (user_id, now) = (user.0.id, state.clock.now());
    let deleted = db.run(move |conn| repo::delete_post(conn, post_id, user_id, now)).await?;
    if !deleted {
        return Err(AppError::NotFound);
    }
    state.threads.bump(post_id).await;
    Ok(see_other_with_notice(&req, "/posts", "Your discussion was deleted. Replies to it stay."))
}
