//! The merchants (customers) a user is linked to, and the staff linked to each.

use actix_session::Session;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::links_of;
use crate::merchants::domain::{Role, NAME_MAX};
use crate::merchants::ids::Linked;
use crate::merchants::ids::{CUSTOMER, USER};
use crate::merchants::{service, MerchantError};
use crate::auth::CurrentUser;
use crate::web::{csrf, html, see_other_with_notice, AppError, Db, Layout};

pub struct StaffView {
    /// The id callers know the user by (`usr_…`).
    pub id: String,
    pub email: String,
    pub role: String,
    pub is_you: bool,
}

pub struct CustomerView {
    /// The id callers know the customer by (`cus_…`).
    pub id: String,
    pub name: String,
    pub country: String,
    /// The viewer is an owner: they may edit it and manage its staff.
    pub owned: bool,
    pub staff: Vec<StaffView>,
}

#[derive(Template)]
#[template(path = "dashboard_customers.html")]
struct CustomersPage {
    layout: Layout,
    customers: Vec<CustomerView>,
}

pub(super) async fn customers_index(req: HttpRequest, user: CurrentUser, db: Db) -> Result<HttpResponse, AppError> {
    let linked = links_of(&db, user.0.id).await?;
    super::staff_only(&linked, user.0.is_admin)?;
    let ids = linked.ids.clone();
    let (customers, users) = db.run(move |conn| service::customers_with_users(conn, &ids)).await?;
    let me = user.0.id;
    let customers = customers
        .into_iter()
        .map(|c| CustomerView {
            staff: users
                .iter()
                .filter(|u| u.customer_id == c.id)
                .map(|u| StaffView { id: USER.show(u.public_id), email: u.email.clone(), role: u.role.clone(), is_you: u.id == me })
                .collect(),
            owned: linked.owns(c.id),
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
    #[serde(default)]
    role: String,
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
async fn visible_customer(db: &Db, user_id: i64, raw: &str) -> Result<(Linked, i64), AppError> {
    let linked = links_of(db, user_id).await?;
    let id = linked.find(raw).ok_or(AppError::NotFound)?;
    Ok((linked, id))
}

/// Back to the customers page saying what happened: done, or why not (a customer that is not
/// the caller's is not found).
fn told(req: &HttpRequest, outcome: Result<(), MerchantError>, done: &str, not_done: &str) -> Result<HttpResponse, AppError> {
    match outcome {
        Ok(()) => Ok(back_to_customers(req, done)),
        Err(MerchantError::NotFound("customer")) => Err(AppError::NotFound),
        Err(e) => Ok(back_to_customers(req, &format!("{not_done}: {e}."))),
    }
}

pub(super) async fn edit_customer(req: HttpRequest, user: CurrentUser, session: Session, db: Db, path: web::Path<String>, form: web::Form<CustomerForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let (name, country) = customer_fields(&form)?;
    let (linked, id) = visible_customer(&db, user.0.id, &path).await?;
    let saved = db.run(move |conn| Ok::<_, AppError>(service::update_customer(conn, &linked, id, Some(&name), Some(country.as_deref())).map(drop))).await?;
    told(&req, saved, "Customer saved.", "Not saved")
}

/// Links a user by email in a role, or gives a linked user another role (owners only).
pub(super) async fn link_user(req: HttpRequest, user: CurrentUser, session: Session, db: Db, path: web::Path<String>, form: web::Form<CustomerForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let (linked, id) = visible_customer(&db, user.0.id, &path).await?;
    let role = if form.role.is_empty() { Role::Member } else { Role::parse(&form.role).ok_or_else(|| AppError::BadRequest("A role is owner or member.".into()))? };
    let (user_id, email) = (user.0.id, form.email.trim().to_string());
    let done = db.run(move |conn| Ok::<_, AppError>(service::link_user(conn, &linked, id, &email, role, user_id))).await?;
    told(&req, done, &format!("{} is {} {}.", form.email.trim(), if role == Role::Owner { "an" } else { "a" }, role.as_str()), "Not changed")
}

pub(super) async fn unlink_user(req: HttpRequest, user: CurrentUser, session: Session, db: Db, path: web::Path<(String, String)>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let (linked, id) = visible_customer(&db, user.0.id, &path.0).await?;
    let (user_id, target) = (user.0.id, path.1.clone());
    let unlinked = db.run(move |conn| Ok::<_, AppError>(service::unlink_user(conn, &linked, id, &target, user_id))).await?;
    match unlinked {
        Err(MerchantError::NotFound(_)) => Err(AppError::NotFound),
        other => told(&req, other, "User unlinked.", "Not unlinked"),
    }
}
