//! Customers (merchants), the users linked to them, and the audit log of changes to links.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::merchants::domain::Role;
use crate::merchants::MerchantError;
use crate::schema::{
    audit_log, customers, user_customers, users,
};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = customers, check_for_backend(diesel::pg::Pg))]
pub struct Customer {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub country: Option<String>,
    pub public_id: Uuid,
}

#[derive(Debug, Clone, Queryable)]
pub struct LinkedUser {
    pub customer_id: i64,
    pub id: i64,
    pub public_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
}

/// Visible customers, newest first, `limit + 1` of them from the cursor on.
pub fn customers_page(conn: &mut PgConnection, visible: &[i64], after: Option<i64>, before: Option<i64>, limit: i64) -> QueryResult<Vec<Customer>> {
    let mut query = customers::table.filter(customers::id.eq_any(visible)).select(Customer::as_select()).into_boxed();
    if let Some(before) = before {
        let mut newer: Vec<Customer> =
            query.filter(customers::id.gt(before)).order(customers::id.asc()).limit(limit + 1).load(conn)?;
        newer.reverse();
        return Ok(newer);
    }
    if let Some(after) = after {
        query = query.filter(customers::id.lt(after));
    }
    query.order(customers::id.desc()).limit(limit + 1).load(conn)
}

/// These customers, by id.
pub fn customers(conn: &mut PgConnection, ids: &[i64]) -> QueryResult<Vec<Customer>> {
    customers::table.filter(customers::id.eq_any(ids)).order(customers::id).select(Customer::as_select()).load(conn)
}

pub fn customer(conn: &mut PgConnection, id: i64) -> QueryResult<Option<Customer>> {
    customers::table.find(id).select(Customer::as_select()).first(conn).optional()
}

pub fn linked_users(conn: &mut PgConnection, customer_ids: &[i64]) -> QueryResult<Vec<LinkedUser>> {
    user_customers::table
        .inner_join(users::table)
        .filter(user_customers::customer_id.eq_any(customer_ids))
        .order((user_customers::customer_id, users::id))
        .select((user_customers::customer_id, users::id, users::public_id, users::email, users::name, user_customers::role))
        .load(conn)
}

/// A user's key, by the id callers know them by.
pub fn user_key(conn: &mut PgConnection, public_id: Uuid) -> QueryResult<Option<i64>> {
    users::table.filter(users::public_id.eq(public_id)).select(users::id).first(conn).optional()
}

/// A new customer, with its creator linked to it.
pub fn create_customer(conn: &mut PgConnection, user_id: i64, name: &str, country: Option<&str>) -> QueryResult<Customer> {
    conn.transaction(|conn| {
        let customer: Customer = diesel::insert_into(customers::table)
            .values((customers::name.eq(name), customers::country.eq(country)))
            .returning(Customer::as_returning())
            .get_result(conn)?;
        diesel::insert_into(user_customers::table)
            .values((user_customers::user_id.eq(user_id), user_customers::customer_id.eq(customer.id), user_customers::role.eq(Role::Owner.as_str())))
            .execute(conn)?;
        Ok(customer)
    })
}

pub fn update_customer(conn: &mut PgConnection, id: i64, name: Option<&str>, country: Option<Option<&str>>) -> QueryResult<Customer> {
    let current = customers::table.find(id).select(Customer::as_select()).first(conn)?;
    diesel::update(customers::table.find(id))
        .set((
            customers::name.eq(name.unwrap_or(&current.name)),
            customers::country.eq(country.unwrap_or(current.country.as_deref())),
        ))
        .returning(Customer::as_returning())
        .get_result(conn)
}

/// Links a user to a customer with a role (again: the role is set).
pub fn link(conn: &mut PgConnection, user_id: i64, customer_id: i64, role: Role) -> QueryResult<()> {
    diesel::insert_into(user_customers::table)
        .values((user_customers::user_id.eq(user_id), user_customers::customer_id.eq(customer_id), user_customers::role.eq(role.as_str())))
        .on_conflict((user_customers::user_id, user_customers::customer_id))
        .do_update()
        .set(user_customers::role.eq(role.as_str()))
        .execute(conn)
        .map(drop)
}

/// The customer's links (user, role), read with its row locked, so that whoever changes them
/// next waits: two owners cannot both step down and leave the customer with none.
fn locked_links(conn: &mut PgConnection, customer_id: i64) -> Result<Vec<(i64, String)>, MerchantError> {
    customers::table.find(customer_id).select(customers::id).for_update().first::<i64>(conn)?;
    Ok(user_customers::table.filter(user_customers::customer_id.eq(customer_id)).select((user_customers::user_id, user_customers::role)).load(conn)?)
}

fn other_owners(links: &[(i64, String)], user_id: i64) -> usize {
    links.iter().filter(|(u, role)| *u != user_id && role == "owner").count()
}

/// Links the user with this email to the customer in this role, or gives a linked user this
/// role; a customer keeps at least one owner. Each change is written to the audit log with the
/// acting user; asking for what already is changes nothing.
pub fn link_user(conn: &mut PgConnection, customer_id: i64, email: &str, role: Role, by: i64) -> Result<(), MerchantError> {
    conn.transaction(|conn| {
        let user = crate::auth::repo::find_by_email(conn, email)?.ok_or(MerchantError::UnknownEmail)?.id;
        let links = locked_links(conn, customer_id)?;
        let subject = format!("customer {customer_id}");
        match links.iter().find(|(u, _)| *u == user) {
            Some((_, current)) if current == role.as_str() => return Ok(()),
            Some(_) if role == Role::Member && other_owners(&links, user) == 0 => return Err(MerchantError::LastOwner),
            Some(_) => audit(conn, Some(by), "set_role", &subject, &format!("user {user} is now {}", role.as_str()))?,
            None => audit(conn, Some(by), "link_user", &subject, &format!("linked user {user} as {}", role.as_str()))?,
        }
        link(conn, user, customer_id, role)?;
        Ok(())
    })
}

/// Unlinks a user; a customer keeps at least one owner (someone must be able to manage it and
/// see its money).
pub fn unlink_user(conn: &mut PgConnection, customer_id: i64, user_id: i64, by: i64) -> Result<(), MerchantError> {
    conn.transaction(|conn| {
        let links = locked_links(conn, customer_id)?;
        let Some((_, role)) = links.iter().find(|(u, _)| *u == user_id) else { return Err(MerchantError::NotFound("user")) };
        if role == "owner" && other_owners(&links, user_id) == 0 {
            return Err(MerchantError::LastOwner);
        }
        diesel::delete(user_customers::table.find((user_id, customer_id))).execute(conn)?;
        audit(conn, Some(by), "unlink_user", &format!("customer {customer_id}"), &format!("unlinked user {user_id}"))?;
        Ok(())
    })
}

pub fn audit(conn: &mut PgConnection, user_id: Option<i64>, action: &str, subject: &str, note: &str) -> QueryResult<()> {
    diesel::insert_into(audit_log::table)
        .values((audit_log::user_id.eq(user_id), audit_log::action.eq(action), audit_log::subject.eq(subject), audit_log::note.eq(note)))
        .execute(conn)
        .map(drop)
}
