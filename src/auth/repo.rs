//! Every query the accounts area makes.

use diesel::prelude::*;

use crate::schema::users;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub is_admin: bool,
}

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

pub fn find_by_email(conn: &mut PgConnection, email: &str) -> QueryResult<Option<User>> {
    users::table
        .filter(lower(users::email).eq(email.trim().to_lowercase()))
        .select(User::as_select())
        .first(conn)
        .optional()
}

pub struct NewUser<'a> {
    pub email: &'a str,
    pub name: &'a str,
    pub password: &'a str,
    pub is_admin: bool,
}

/// Creates the user unless the email is taken; returns the id either way.
pub fn ensure(conn: &mut PgConnection, user: &NewUser<'_>) -> QueryResult<i64> {
    if let Some(existing) = find_by_email(conn, user.email)? {
        return Ok(existing.id);
    }
    diesel::insert_into(users::table)
        .values((
            users::email.eq(user.email),
            users::name.eq(user.name),
            users::password_hash.eq(super::password::hash(user.password)),
            users::is_admin.eq(user.is_admin),
        ))
        .returning(users::id)
        .get_result(conn)
}
