//! Every query the accounts area makes.

use diesel::prelude::*;

use chrono::{DateTime, Utc};

use crate::schema::{customers, user_customers, user_sessions, users};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub is_admin: bool,
    /// The id the merchants' API knows the user by (`usr_…`).
    pub public_id: uuid::Uuid,
}

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

pub fn find_by_email(conn: &mut PgConnection, email: &str) -> QueryResult<Option<User>> {
    if email.contains('\0') {
        return Ok(None); // no address has one, and PostgreSQL would refuse the query
    }
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

/// A new account from the sign-up form, with its password already hashed; `None` if the email
/// is taken (the unique index on `lower(email)` decides, so two sign-ups at once cannot both win).
pub fn create(conn: &mut PgConnection, email: &str, name: &str, password_hash: &str) -> QueryResult<Option<i64>> {
    diesel::insert_into(users::table)
        .values((users::email.eq(email), users::name.eq(name), users::password_hash.eq(password_hash)))
        .on_conflict_do_nothing()
        .returning(users::id)
        .get_result(conn)
        .optional()
}

pub fn password_hash(conn: &mut PgConnection, user_id: i64) -> QueryResult<String> {
    users::table.find(user_id).select(users::password_hash).first(conn)
}

pub fn set_password_hash(conn: &mut PgConnection, user_id: i64, hash: &str) -> QueryResult<()> {
    diesel::update(users::table.find(user_id)).set(users::password_hash.eq(hash)).execute(conn).map(drop)
}

pub fn is_admin(conn: &mut PgConnection, user_id: i64) -> QueryResult<bool> {
    users::table.find(user_id).select(users::is_admin).first(conn).optional().map(|a| a.unwrap_or(false))
}

pub fn create_session(
    conn: &mut PgConnection,
    user_id: i64,
    token_hash: &[u8],
    user_agent: &str,
    expires_at: DateTime<Utc>,
) -> QueryResult<()> {
    let user_agent: String = user_agent.chars().take(200).collect();
    diesel::insert_into(user_sessions::table)
        .values((
            user_sessions::user_id.eq(user_id),
            user_sessions::token_hash.eq(token_hash),
            user_sessions::user_agent.eq(user_agent),
            user_sessions::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(drop)
}

/// The user a live (unrevoked, unexpired) session belongs to.
/// The user holding a live session, and whether they are linked to any merchant.
pub fn session_user(conn: &mut PgConnection, token_hash: &[u8], now: DateTime<Utc>) -> QueryResult<Option<(User, bool)>> {
    user_sessions::table
        .inner_join(users::table)
        .filter(user_sessions::token_hash.eq(token_hash))
        .filter(user_sessions::revoked_at.is_null())
        .filter(user_sessions::expires_at.gt(now))
        .select((User::as_select(), diesel::dsl::exists(user_customers::table.filter(user_customers::user_id.eq(users::id)))))
        .first(conn)
        .optional()
}

/// Whether the user is linked to any merchant.
pub fn is_staff(conn: &mut PgConnection, user_id: i64) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(user_customers::table.filter(user_customers::user_id.eq(user_id)))).get_result(conn)
}

pub fn revoke_session(conn: &mut PgConnection, token_hash: &[u8], now: DateTime<Utc>) -> QueryResult<()> {
    diesel::update(user_sessions::table.filter(user_sessions::token_hash.eq(token_hash)).filter(user_sessions::revoked_at.is_null()))
        .set(user_sessions::revoked_at.eq(now))
        .execute(conn)
        .map(drop)
}

/// Voids every API bearer token the user holds (those issued up to this second): with a password
/// change or "sign out everywhere", in the same transaction.
pub fn void_bearer_tokens(conn: &mut PgConnection, user_id: i64, now: DateTime<Utc>) -> QueryResult<()> {
    diesel::update(users::table.find(user_id)).set(users::tokens_valid_after.eq(now)).execute(conn).map(drop)
}

/// Ends every session of the user; returns their token hashes (to drop them from the cache).
pub fn revoke_all_sessions(conn: &mut PgConnection, user_id: i64, now: DateTime<Utc>) -> QueryResult<Vec<Vec<u8>>> {
    diesel::update(user_sessions::table.filter(user_sessions::user_id.eq(user_id)).filter(user_sessions::revoked_at.is_null()))
        .set(user_sessions::revoked_at.eq(now))
        .returning(user_sessions::token_hash)
        .get_results(conn)
}

/// Ends every session of the account but the one whose token hashes to `keep`.
pub fn revoke_other_sessions(conn: &mut PgConnection, user_id: i64, keep: &[u8], now: DateTime<Utc>) -> QueryResult<Vec<Vec<u8>>> {
    diesel::update(
        user_sessions::table
            .filter(user_sessions::user_id.eq(user_id))
            .filter(user_sessions::revoked_at.is_null())
            .filter(user_sessions::token_hash.ne(keep)),
    )
    .set(user_sessions::revoked_at.eq(now))
    .returning(user_sessions::token_hash)
    .get_results(conn)
}

#[derive(Debug, Clone, Queryable)]
pub struct ActiveSession {
    pub token_hash: Vec<u8>,
    pub user_agent: String,
    pub created_at: DateTime<Utc>,
}

pub fn active_sessions(conn: &mut PgConnection, user_id: i64, now: DateTime<Utc>) -> QueryResult<Vec<ActiveSession>> {
    user_sessions::table
        .filter(user_sessions::user_id.eq(user_id))
        .filter(user_sessions::revoked_at.is_null())
        .filter(user_sessions::expires_at.gt(now))
        .order(user_sessions::created_at.desc())
        .limit(50)
        .select((user_sessions::token_hash, user_sessions::user_agent, user_sessions::created_at))
        .load(conn)
}

/// Forgets sessions that ended (revoked or expired) before `before`.
pub fn prune_sessions(conn: &mut PgConnection, before: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(user_sessions::table.filter(user_sessions::expires_at.lt(before).or(user_sessions::revoked_at.lt(before))))
        .execute(conn)
}

/// The merchants this user is staff of, with their role, by name: what the account page says
/// about them (the links are the merchants area's to write; this only reads them).
pub fn staff_of(conn: &mut PgConnection, user_id: i64) -> QueryResult<Vec<(String, String)>> {
    user_customers::table
        .inner_join(customers::table)
        .filter(user_customers::user_id.eq(user_id))
        .order(customers::name)
        .select((customers::name, user_customers::role))
        .load(conn)
}
