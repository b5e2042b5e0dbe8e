//! The merchants (customers) a user is linked to, and the staff linked to each.

use actix_session::Session;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::links_of;
use crate::merchants::domain::NAME_MAX;
use crate::merchants::ids::{CUSTOMER, USER};
use crate::merchants::{service, MerchantError};
use crate::auth::CurrentUser;
use crate::web::{csrf, html, see_other_with_notice, AppError, Db, Layout};

pub struct CustomerView {
    /// The ids callers know the customer and its users by (`cus_…`, `usr_…`).
    pub id: String,
    pub name: String,
    pub country: String,
    pub users: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "dashboard_customers.html")]
struct CustomersPage {
    layout: Layout,
    customers: Vec<CustomerView>,
}

pub(super) async fn customers_index(req: HttpRequest, user: CurrentUser, db: Db) -> Result<HttpResponse, AppError> {
    let visible = links_of(&db, user.0.id).await?;
    let (customers, users) = db.run(move |conn| service::customers_with_users(conn, &visible.ids)).await?;
    let customers = customers
        .into_iter()
        .map(|c| CustomerView {
            users: users.iter().filter(|u| u.customer_id == c.id).map(|u| (USER.show(u.public_id), u.email.clone())).collect(),
            id: CUSTOMER.show(c.public_id),
            name: c.name,
            country: c.country.unwrap_or_default(),
        })
        .collect();
    html(CustomersPage { layout: Layout::new(&req), customers })
}

#[derive(Deserialize)]
pub(super) struct CustomerForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    email: String,
}

fn customer_fields(form: &CustomerForm) -> Result<(String, Option<String>), AppError> {
    let name = form.name.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX || name.contains('\0') {
        return Err(AppError::BadRequest(format!("A customer's name is 1 to {NAME_MAX} characters.")));
    }
    let country = form.country.trim();
    let two_letters = country.len() == 2 && country.bytes().all(|b| b.is_ascii_alphabetic());
    if !country.is_empty() && !two_letters {
        return Err(AppError::BadRequest("A country is a two-letter code such as DK, or empty.".into()));
    }
    Ok((name.to_string(), (!country.is_empty()).then(|| country.to_ascii_uppercase())))
}

fn back_to_customers(req: &HttpRequest, notice: &str) -> HttpResponse {
    see_other_with_notice(req, "/dashboard/customers", notice)
}

pub(super) async fn create_customer(req: HttpRequest, user: CurrentUser, session: Session, db: Db, form: web::Form<CustomerForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let (name, country) = customer_fields(&form)?;
    let user_id = user.0.id;
    db.run(move |conn| service::create_customer(conn, user_id, &name, country.as_deref())).await?;
    Ok(back_to_customers(&req, "Customer created."))
}

/// The caller's links, and the key of the customer the path names if it is one of them.
async fn visible_customer(db: &Db, user_id: i64, raw: &str) -> Result<(Vec<i64>, i64), AppError> {
    let visible = links_of(db, user_id).await?;
    let id = visible.find(raw).ok_or(AppError::NotFound)?;
    Ok((visible.ids, id))
}

pub(super) async fn edit_customer(req: HttpRequest, user: CurrentUser, session: Session, db: Db, path: web::Path<String>, form: web::Form<CustomerForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let (name, country) = customer_fields(&form)?;
    let (visible, id) = visible_customer(&db, user.0.id, &path).await?;
    db.run(move |conn| service::update_customer(conn, &visible, id, Some(&name), Some(country.as_deref()))).await?;
    Ok(back_to_customers(&req, "Customer saved."))
}

pub(super) async fn link_user(req: HttpRequest, user: CurrentUser, session: Session, db: Db, path: web::Path<String>, form: web::Form<CustomerForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let (visible, id) = visible_customer(&db, user.0.id, &path).await?;
    let (user_id, email) = (user.0.id, form.email.trim().to_string());
    let linked = db.run(move |conn| Ok::<_, AppError>(service::link_user(conn, &visible, id, &email, user_id))).await?;
    Ok(back_to_customers(&req, &match linked {
        Ok(()) => "User linked.".to_string(),
        Err(e) => format!("Not linked: {e}."),
    }))
}

pub(super) async fn unlink_user(req: HttpRequest, user: CurrentUser, session: Session, db: Db, path: web::Path<(String, String)>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let (visible, id) = visible_customer(&db, user.0.id, &path.0).await?;
    let (user_id, target) = (user.0.id, path.1.clone());
    let unlinked = db.run(move |conn| Ok::<_, AppError>(service::unlink_user(conn, &visible, id, &target, user_id))).await?;
    Ok(back_to_customers(&req, &match unlinked {
        Ok(()) => "User unlinked.".to_string(),
        Err(MerchantError::NotFound(_)) => return Err(AppError::NotFound),
        Err(e) => format!("Not unlinked: {e}."),
    }))
}
