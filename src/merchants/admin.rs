//! `agora admin …`: bootstrapping a real installation from the command line — the first staff
//! accounts and their links to merchants — before anyone can sign in to do it on a page.

use diesel::prelude::*;

use super::repo;
use crate::auth::repo::{self as accounts, NewUser};
use crate::schema::customers;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// Creates an account; an email already taken is an error (nothing is overwritten).
pub fn create_user(conn: &mut PgConnection, email: &str, name: &str, password: &str, is_admin: bool) -> Result<i64, AdminError> {
    let email = email.trim();
    if !email.contains('@') || email.len() > 320 {
        return Err(AdminError::Invalid(format!("{email:?} is not an email address")));
    }
    if name.trim().is_empty() {
        return Err(AdminError::Invalid("a name is required".into()));
    }
    if password.chars().count() < 10 {
        return Err(AdminError::Invalid("a password has at least 10 characters".into()));
    }
    if accounts::find_by_email(conn, email)?.is_some() {
        return Err(AdminError::Invalid(format!("{email} already has an account")));
    }
    Ok(accounts::ensure(conn, &NewUser { email, name: name.trim(), password, is_admin })?)
}

/// Links the account to a customer given by id (`cus_…` or its key) or exact name, creating a
/// customer of that name when there is none. Returns the customer's key.
pub fn link(conn: &mut PgConnection, email: &str, customer: &str) -> Result<i64, AdminError> {
    let user = accounts::find_by_email(conn, email)?.ok_or_else(|| AdminError::Invalid(format!("no account for {email}")))?;
    // By the id the API and dashboard show (`cus_…`), by key, or by exact name.
    let key = match super::ids::CUSTOMER.parse(customer) {
        Some(public) => customers::table.filter(customers::public_id.eq(public)).select(customers::id).first::<i64>(conn).optional()?,
        None => customer.parse::<i64>().ok(),
    };
    let by_id = key.map(|id| repo::customer(conn, id)).transpose()?.flatten();
    let customer_id = match by_id {
        Some(found) => found.id,
        None => {
            let by_name: Option<i64> = customers::table.filter(customers::name.eq(customer)).order(customers::id).select(customers::id).first(conn).optional()?;
            match by_name {
                Some(id) => id,
                None => return Ok(repo::create_customer(conn, user.id, customer.trim(), None)?.id),
            }
        }
    };
    // Bootstrapping: whoever is linked from the command line manages the merchant.
    repo::link(conn, user.id, customer_id, super::domain::Role::Owner)?;
    repo::audit(conn, None, "link_user", &format!("customer {customer_id}"), &format!("linked user {} from the command line", user.id))?;
    Ok(customer_id)
}
